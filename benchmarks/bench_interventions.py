"""Head-ablation sweeps and attribution patching, timed side by side with the naive way.

Naive (what the guide and most tools do): one full forward per head, with the head
zeroed by a hook, computing the logits at every position. finwidget: ``sweep_heads``
(each head's run resumes at its layer from the cached clean run, final norm and LM head
at the answer position only). Both give the task's logit difference per head; the
script prints the max abs difference between them, the times and the ratio.

Attribution patching (one forward + one backward, estimates for every head) is timed
against one plain forward + ``loss.backward()`` and against the real sweep.

Run: ``python benchmarks/bench_interventions.py`` (``--quick`` for a smaller check;
``--heads-per-layer N`` times N heads of every layer on the large model, which keeps
the per-layer mix of the full sweep, so the ratio is the full sweep's).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({cpu})"
    return (f"{device}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {load:.1f}")


def random_qwen2(layers, hidden, heads, kv_heads, intermediate, vocab, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).eval()


class _IdTask:
    """The task readout on raw token ids (the random model has no tokenizer): answer tokens 11 and 12."""

    answer_token_ids = (11, 12)
    tokenizer = None

    def logit_diff(self, logits):
        return logits[..., 11].float() - logits[..., 12].float()


class Clock:
    """Wall-clock and process CPU time (all threads). On a shared machine the CPU time is
    the steadier measure of the work done; both are printed."""

    def __init__(self):
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu
        return False


def naive_logit_diff(model, task, batch, layer, head, logits_to_keep=0):
    """One full forward with the head zeroed (the guide's way), logits at every position."""
    from finwidget.interventions import InterventionSet

    with InterventionSet([(layer, head)]).applied(model), torch.inference_mode():
        logits = model(**batch, logits_to_keep=logits_to_keep).logits
    return task.logit_diff(logits[:, -1, :]).float().cpu()


def forward_backward(model, task, batch):
    with torch.enable_grad():
        logits = model(**batch, use_cache=False).logits
        task.logit_diff(logits[:, -1, :]).sum().backward()
    model.zero_grad(set_to_none=True)


def compare(name, model, task, batch, heads, repeat_fb=3):
    """Naive and finwidget runs interleaved head by head, so both see the same machine load."""
    from finwidget.interventions import CachedRun, InterventionSet, attribution_patching, sweep_heads

    print(f"\n## {name}: {len(heads)} heads, batch {tuple(batch['input_ids'].shape)}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    naive_clock, naive1_clock, fast_clock, build_clock = Clock(), Clock(), Clock(), Clock()
    naive_logit_diff(model, task, batch, *heads[0])  # warm-up
    with build_clock:
        run = CachedRun(model, task, batch)
    naive, naive1, fast = [], [], []
    for layer, head in heads:
        with naive_clock:
            naive.append(naive_logit_diff(model, task, batch, layer, head))
        with fast_clock:
            fast.append(run.logit_diffs([InterventionSet([(layer, head)])])[0])
        with naive1_clock:
            naive1.append(naive_logit_diff(model, task, batch, layer, head, logits_to_keep=1))
    naive, naive1, fast = torch.stack(naive), torch.stack(naive1), torch.stack(fast)
    table = sweep_heads(model, task, batch, heads=heads, progress=False)
    if "statement" in table.columns:  # rows come statement by statement; line them up head by head
        table = table.sort_values(["layer", "head", "statement"], kind="stable")
    swept = torch.tensor(table["logit_diff"].to_numpy(), dtype=torch.float32).view(len(heads), -1)
    diff = float((fast - naive).abs().max())
    all_heads = model.config.num_hidden_layers * model.config.num_attention_heads
    share = all_heads / len(heads)  # heads are sampled evenly per layer; a head's cost depends on its layer only
    print(f"naive (full forward per head, logits at all positions): wall {naive_clock.wall:8.2f} s  "
          f"cpu {naive_clock.cpu:8.2f} s")
    print(f"finwidget (CachedRun: resume at the head's layer):      wall {fast_clock.wall:8.2f} s  "
          f"cpu {fast_clock.cpu:8.2f} s  + the cached clean run once: wall {build_clock.wall:.2f} s, "
          f"cpu {build_clock.cpu:.2f} s")
    scopes = [(f"these {len(heads)} heads", 1.0)] + ([(f"all {all_heads} heads", share)] if share != 1 else [])
    for label, n in scopes:
        naive_wall, naive_cpu = naive_clock.wall * n, naive_clock.cpu * n
        fast_wall, fast_cpu = fast_clock.wall * n + build_clock.wall, fast_clock.cpu * n + build_clock.cpu
        print(f"speed-up over {label}{' (projected)' if n != 1.0 else ''}: wall {naive_wall / fast_wall:.2f}x, "
              f"cpu {naive_cpu / fast_cpu:.2f}x; vs naive with logits_to_keep=1: wall "
              f"{naive1_clock.wall * n / fast_wall:.2f}x, cpu {naive1_clock.cpu * n / fast_cpu:.2f}x")
    print(f"max |logit diff naive - finwidget| = {diff:.2e} (naive with logits_to_keep=1: "
          f"{float((fast - naive1).abs().max()):.2e}); sweep_heads vs per-head runs: {float((swept - fast).abs().max()):.2e}")
    fb, attribution = Clock(), Clock()
    for _ in range(repeat_fb):
        with fb:
            forward_backward(model, task, batch)
        with attribution:
            attribution_patching(model, task, batch)
    sweep_cpu = fast_clock.cpu * share + build_clock.cpu
    print(f"one forward + backward: cpu {fb.cpu / repeat_fb:.3f} s (wall {fb.wall / repeat_fb:.3f}); attribution "
          f"patching, all {all_heads} heads: cpu {attribution.cpu / repeat_fb:.3f} s (wall {attribution.wall / repeat_fb:.3f})"
          f" = {attribution.cpu / fb.cpu:.2f}x forward+backward; the exact sweep of all heads "
          f"{'(extrapolated) ' if len(heads) < all_heads else ''}cpu {sweep_cpu:.2f} s = "
          f"{sweep_cpu / (attribution.cpu / repeat_fb):.1f}x attribution patching")
    return {"naive": naive_clock, "fast": fast_clock, "diff": diff}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model and sequence")
    parser.add_argument("--heads-per-layer", type=int, default=None,
                        help="heads timed per layer on the large model (default: all)")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-random", action="store_true", help="only the demo model")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 gives steadier CPU times on a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    print(f"machine: {machine()}")

    layers, hidden, heads, kv, inter, vocab = (12, 768, 12, 2, 3072, 151936)
    tokens = args.tokens
    if args.quick:
        layers, hidden, inter, vocab, tokens = 4, 384, 1536, 32000, 128
    if not args.skip_random:
        run_random(layers, hidden, heads, kv, inter, vocab, tokens, args.heads_per_layer)
    if not args.skip_demo:
        run_demo()


def run_random(layers, hidden, heads, kv, inter, vocab, tokens, heads_per_layer):
    model = random_qwen2(layers, hidden, heads, kv, inter, vocab)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(20, vocab, (1, tokens), generator=generator),
             "attention_mask": torch.ones((1, tokens), dtype=torch.long)}
    per_layer = heads_per_layer or heads
    chosen = [(l, h) for l in range(layers) for h in range(0, heads, max(1, heads // per_layer))][: layers * per_layer]
    print(f"random Qwen2-shaped model: {layers} layers, hidden {hidden}, {heads} query heads over {kv} KV heads, "
          f"intermediate {inter}, vocabulary {vocab}, float32, T={tokens}")
    compare("random Qwen2-shaped model", model, _IdTask(), batch, chosen)


def run_demo():
    from finwidget import load_demo_model
    from finwidget.demo import make_statements
    from finwidget.task import EarningsTask

    demo, tokenizer = load_demo_model()
    task = EarningsTask(tokenizer)
    statements = [s.text for s in make_statements(8, seed=123)]
    batch = task.encode(statements)
    config = demo.config
    all_heads = [(layer, head) for layer in range(config.num_hidden_layers) for head in range(config.num_attention_heads)]
    compare("demo model (8 statements)", demo, task, batch, all_heads, repeat_fb=5)


if __name__ == "__main__":
    main()
