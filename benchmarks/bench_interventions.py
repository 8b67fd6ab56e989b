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
import statistics
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


def naive_sweep(model, task, batch, heads, logits_to_keep=0):
    from finwidget.interventions import InterventionSet

    out = []
    for layer, head in heads:
        with InterventionSet([(layer, head)]).applied(model), torch.inference_mode():
            logits = model(**batch, logits_to_keep=logits_to_keep).logits
        out.append(task.logit_diff(logits[:, -1, :]).float().cpu())
    return torch.stack(out)


def timed(fn, repeat=1):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def forward_backward(model, task, batch):
    with torch.enable_grad():
        logits = model(**batch, use_cache=False).logits
        task.logit_diff(logits[:, -1, :]).sum().backward()
    model.zero_grad(set_to_none=True)


def compare(name, model, task, batch, heads, with_fair_naive=True, repeat_fb=3):
    from finwidget.interventions import attribution_patching, sweep_heads

    print(f"\n## {name}: {len(heads)} heads, batch {tuple(batch['input_ids'].shape)}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    sweep_heads(model, task, batch, heads=heads[:1], progress=False)  # warm-up
    t_fast, table = timed(lambda: sweep_heads(model, task, batch, heads=heads, progress=False))
    fast = torch.tensor(table["logit_diff"].to_numpy(), dtype=torch.float32).view(len(heads), -1)
    t_naive, naive = timed(lambda: naive_sweep(model, task, batch, heads))
    diff = float((fast - naive).abs().max())
    print(f"naive sweep (full forward per head, all-position logits): {t_naive:8.2f} s")
    print(f"finwidget sweep_heads (resume at layer, answer logits):   {t_fast:8.2f} s")
    print(f"speed-up: {t_naive / t_fast:.2f}x   max |logit diff naive - finwidget| = {diff:.2e}")
    if with_fair_naive:
        t_naive1, naive1 = timed(lambda: naive_sweep(model, task, batch, heads, logits_to_keep=1))
        print(f"naive sweep with logits_to_keep=1 (a stronger baseline):  {t_naive1:8.2f} s "
              f"-> speed-up {t_naive1 / t_fast:.2f}x, max diff {float((fast - naive1).abs().max()):.2e}")
    t_fb, _ = timed(lambda: forward_backward(model, task, batch), repeat=repeat_fb)
    t_attr, _ = timed(lambda: attribution_patching(model, task, batch), repeat=repeat_fb)
    all_heads = model.config.num_hidden_layers * model.config.num_attention_heads
    sweep_all = t_fast * all_heads / len(heads)
    print(f"one forward + backward: {t_fb:.3f} s; attribution patching (all {all_heads} heads): {t_attr:.3f} s "
          f"= {t_attr / t_fb:.2f}x forward+backward; the real sweep of all heads "
          f"{'(extrapolated) ' if len(heads) < all_heads else ''}{sweep_all:.2f} s = {sweep_all / t_attr:.1f}x attribution")
    return {"naive": t_naive, "fast": t_fast, "diff": diff}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model and sequence")
    parser.add_argument("--heads-per-layer", type=int, default=None,
                        help="heads timed per layer on the large model (default: all)")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(True)
    print(f"machine: {machine()}")

    layers, hidden, heads, kv, inter, vocab = (12, 768, 12, 2, 3072, 151936)
    tokens = args.tokens
    if args.quick:
        layers, hidden, inter, vocab, tokens = 4, 384, 1536, 32000, 128
    model = random_qwen2(layers, hidden, heads, kv, inter, vocab)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(20, vocab, (1, tokens), generator=generator),
             "attention_mask": torch.ones((1, tokens), dtype=torch.long)}
    per_layer = args.heads_per_layer or heads
    chosen = [(l, h) for l in range(layers) for h in range(0, heads, max(1, heads // per_layer))][: layers * per_layer]
    print(f"random Qwen2-shaped model: {layers} layers, hidden {hidden}, {heads} query heads over {kv} KV heads, "
          f"intermediate {inter}, vocabulary {vocab}, float32, T={tokens}")
    compare("random Qwen2-shaped model", model, _IdTask(), batch, chosen)

    if not args.skip_demo:
        from finwidget.demo import make_statements
        from finwidget.loading import load_demo_model
        from finwidget.task import EarningsTask

        demo, tokenizer = load_demo_model()
        task = EarningsTask(tokenizer)
        statements = [s.text for s in make_statements(8, seed=123)]
        batch = task.encode(statements)
        all_heads = [(l, h) for l in range(demo.config.num_hidden_layers) for h in range(demo.config.num_attention_heads)]
        compare("demo model (8 statements)", demo, task, batch, all_heads, repeat_fb=5)


if __name__ == "__main__":
    main()
