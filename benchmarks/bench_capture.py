"""Attention capture, side by side: plain SDPA forward vs eager output_attentions vs finwidget.

Run:  .venv/bin/python benchmarks/bench_capture.py               (T = 512, 1024, 2048, 4096)
      .venv/bin/python benchmarks/bench_capture.py --quick       (T = 512, 1024; 1 repeat)
      .venv/bin/python benchmarks/bench_capture.py --lengths 2048 --repeats 5

Model: a random Qwen2-shaped model (12 layers, hidden 768, 12 query heads over 2 KV
heads, head size 64, MLP 3072, vocabulary 8192), float32, CPU, batch 1, logits at the
answer position only (``logits_to_keep=1``: the task reads one position).

For each T it measures, with the same weights and tokens:
- plain:   ``model(ids)`` with SDPA, nothing recorded;
- eager:   ``model(ids, output_attentions=True)`` on the eager path (what the guide,
           BertViz and most tools do), weights kept;
- capture: ``with capture_attention(model) as cap: model(ids)``, post-RoPE Q/K kept.

Time: median wall time of ``--repeats`` forward passes after one warm-up, the three
configurations interleaved in one process so that load from other processes hits them
alike; the CPU seconds of the process (``time.process_time``) are printed next to it,
as a second view that other processes' load disturbs less. Memory: each configuration runs again in a fresh subprocess; after the model is
built the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), then it
reports the peak RSS during the forward pass (VmHWM) and that peak above the RSS
before the pass. "kept" is the bytes of tensors left after the call (attention weights
for eager, queries + keys for capture).

At T = 2048 it also times recomputing one head's full T x T matrix and one query row
from the capture (median over 12 layer/head pairs).

Eager at T = 4096 is skipped unless ``--eager-4096``: it keeps 12 x 12 x 4096^2 float32
weights (9.7 GB) plus as much again in temporaries, more than this shared machine has
to spare. Targets (issue 3, section 5): capture within 1.10x of plain at every T; at
T = 2048 capture >= 2.5x faster than eager and >= 20x fewer bytes kept; one head's
matrix < 20 ms at T = 2048. Nothing here asserts: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CONFIGS = ("plain", "eager", "capture")
GEOMETRY = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 2,
            "intermediate_size": 3072, "vocab_size": 8192}


# ---------------------------------------------------------------------------- worker side
def _build_model(threads: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = Qwen2Config(max_position_embeddings=8192, **GEOMETRY)
    config._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(config).eval()


def _tokens(length: int):
    import torch

    return torch.randint(0, GEOMETRY["vocab_size"], (1, length), generator=torch.Generator().manual_seed(length))


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM) at the current RSS (Linux >= 4.0), so the
    peak read after the forward pass is the forward pass's, not the model build's."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _run(config: str, model, ids):
    """One forward pass of ``config``; returns (what it keeps, bytes kept)."""
    import torch

    from finwidget.capture import capture_attention

    with torch.inference_mode():
        if config == "plain":
            model(input_ids=ids, logits_to_keep=1)
            return None, 0
        if config == "eager":
            model.set_attn_implementation("eager")
            try:
                out = model(input_ids=ids, logits_to_keep=1, output_attentions=True)
            finally:
                model.set_attn_implementation("sdpa")
            return out.attentions, sum(a.numel() * a.element_size() for a in out.attentions)
        with capture_attention(model) as cap:
            model(input_ids=ids, logits_to_keep=1)
        return cap, cap.nbytes


def worker_memory(config: str, length: int, threads: int) -> dict:
    import gc

    model = _build_model(threads)
    ids = _tokens(length)
    gc.collect()
    peak_reset = _reset_peak_rss()
    before = _rss_bytes("VmRSS")
    _kept_alive, kept_bytes = _run(config, model, ids)    # held until the peak is read
    peak = _rss_bytes("VmHWM")
    return {"config": config, "length": length, "peak_rss": peak, "peak_above_start": peak - before,
            "kept_bytes": kept_bytes, "peak_reset": peak_reset}


def worker_timing(configs: list[str], length: int, repeats: int, threads: int, head_timing: bool) -> dict:
    model = _build_model(threads)
    ids = _tokens(length)
    times: dict[str, list[float]] = {c: [] for c in configs}
    cpu_times: dict[str, list[float]] = {c: [] for c in configs}
    kept: dict[str, int] = {}
    for config in configs:                                   # warm-up
        held, kept[config] = _run(config, model, ids)
        del held
    for _ in range(repeats):
        for config in configs:
            start, cpu_start = time.perf_counter(), time.process_time()
            held, _ = _run(config, model, ids)
            times[config].append(time.perf_counter() - start)
            cpu_times[config].append(time.process_time() - cpu_start)
            del held
    result = {"length": length, "median_s": {c: statistics.median(v) for c, v in times.items()},
              "median_cpu_s": {c: statistics.median(v) for c, v in cpu_times.items()},
              "all_s": times, "kept_bytes": kept}
    if head_timing:
        result.update(_head_timing(model, ids))
    return result


def _head_timing(model, ids) -> dict:
    """Milliseconds to recompute one head's T x T matrix / one query row / a whole layer."""
    import torch

    from finwidget.capture import capture_attention

    with torch.inference_mode(), capture_attention(model) as cap:
        model(input_ids=ids, logits_to_keep=1)
    pairs = [(layer, (5 * layer + 3) % cap.num_heads) for layer in range(cap.num_layers)]
    cap.head_matrix(0, 0)                                    # warm-up (concatenation, allocator)

    def median_ms(call) -> tuple[float, float]:
        """Median (wall ms, CPU ms) over the layer/head pairs."""
        wall, cpu = [], []
        for layer, head in pairs:
            start, cpu_start = time.perf_counter(), time.process_time()
            call(layer, head)
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - cpu_start) * 1000)
        return statistics.median(wall), statistics.median(cpu)

    last = cap.seq_len - 1
    head_ms = median_ms(lambda layer, head: cap.head_matrix(layer, head))
    row_ms = median_ms(lambda layer, head: cap.attention(layer, head=head, query=last))
    lazy_row_ms = median_ms(lambda layer, head: cap.attention_weights[f"layer_{layer}"][0, :, last, :].mean(dim=0))
    start, cpu_start = time.perf_counter(), time.process_time()
    cap.attention(0)
    layer_ms = ((time.perf_counter() - start) * 1000, (time.process_time() - cpu_start) * 1000)
    with torch.inference_mode(), capture_attention(model, store_dtype=torch.float16) as half:
        model(input_ids=ids, logits_to_keep=1)
    return {"head_matrix_ms": head_ms, "query_row_ms": row_ms, "all_heads_row_mean_ms": lazy_row_ms,
            "whole_layer_ms": layer_ms, "kept_fp16_bytes": half.nbytes}


# ---------------------------------------------------------------------------- driver side
def _spawn(args: list[str]) -> dict:
    command = [sys.executable, __file__, *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _kept(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="T = 512, 1024 and 1 repeat")
    parser.add_argument("--eager-4096", action="store_true", help="also run eager at T >= 4096 (~20 GB)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory runs")
    parser.add_argument("--head-timing-at", type=int, default=2048, help="T at which to time one head / one row")
    parser.add_argument("--worker", choices=("memory", "timing"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--configs", help=argparse.SUPPRESS)
    parser.add_argument("--head-timing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "memory":
        print(json.dumps(worker_memory(args.config, args.lengths[0], args.threads)))
        return
    if args.worker == "timing":
        print(json.dumps(worker_timing(args.configs.split(","), args.lengths[0], args.repeats, args.threads,
                                       args.head_timing)))
        return

    lengths = args.lengths or ([512, 1024] if args.quick else [512, 1024, 2048, 4096])
    repeats = 1 if args.quick else args.repeats
    import torch
    import transformers

    print(f"bench_capture: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(torch threads {args.threads}), torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"model: random Qwen2, {GEOMETRY}, float32, batch 1, logits_to_keep=1; median of {repeats} "
          "after 1 warm-up, configurations interleaved")
    rows = []
    for length in lengths:
        configs = ["plain", "capture"] + (["eager"] if length < 4096 or args.eager_4096 else [])
        timing = _spawn(["--worker", "timing", "--configs", ",".join(configs), "--lengths", str(length),
                         "--repeats", str(repeats), "--threads", str(args.threads)]
                        + (["--head-timing"] if length == args.head_timing_at else []))
        memory = {}
        if not args.no_memory:
            for config in configs:
                memory[config] = _spawn(["--worker", "memory", "--config", config, "--lengths", str(length),
                                         "--threads", str(args.threads)])
        rows.append((length, configs, timing, memory))
        print(f"  T={length}: done", flush=True)

    print()
    print("time: median wall ms (and the capture/plain ratio in CPU seconds of the process)")
    header = (f"{'T':>5} | {'plain ms':>9} | {'eager ms':>9} | {'capture ms':>10} | {'capture/plain':>13} | "
              f"{'(CPU s)':>7} | "
              f"{'eager/capture':>13} | {'peak RSS MB plain/eager/capture':>31} | "
              f"{'above start MB p/e/c':>22} | {'kept eager':>11} | {'kept capture':>12} | {'kept ratio':>10}")
    print(header)
    print("-" * len(header))
    for length, configs, timing, memory in rows:
        if "error" in timing:
            print(f"{length:>5} | timing run failed: {timing['error']}")
            continue
        med = timing["median_s"]
        plain, capture = med["plain"] * 1000, med["capture"] * 1000
        eager = med.get("eager")
        eager_ms = f"{eager * 1000:9.0f}" if eager else f"{'skipped':>9}"
        eager_ratio = f"{eager / med['capture']:13.2f}" if eager else f"{'-':>13}"
        kept = timing["kept_bytes"]

        def mem(config, key, memory=memory):
            entry = memory.get(config, {})
            return _mb(entry[key]) if key in entry else "-"

        peaks = "/".join(mem(c, "peak_rss") for c in CONFIGS)
        above = "/".join(mem(c, "peak_above_start") for c in CONFIGS)
        kept_eager = _kept(kept["eager"]) if "eager" in kept else "-"
        kept_ratio = f"{kept['eager'] / kept['capture']:10.1f}x" if "eager" in kept else f"{'-':>11}"
        cpu = timing["median_cpu_s"]
        cpu_ratio = cpu["capture"] / cpu["plain"]
        print(f"{length:>5} | {plain:9.0f} | {eager_ms} | {capture:10.0f} | {capture / plain:13.3f} | {cpu_ratio:7.3f} | "
              f"{eager_ratio} | "
              f"{peaks:>31} | {above:>22} | {kept_eager:>11} | {_kept(kept['capture']):>12} | {kept_ratio}")
    for length, configs, timing, memory in rows:
        if "eager" not in configs:
            print(f"T={length}: eager output_attentions skipped (would keep "
                  f"{_kept(12 * 12 * length * length * 4)} of weights; pass --eager-4096 to run it)")
        if "head_matrix_ms" in timing:
            def both(key, digits, timing=timing):
                wall, cpu = timing[key]
                return f"{wall:.{digits}f} ms (CPU {cpu:.{digits}f} ms)"

            print(f"T={length}, recomputed from the capture (median over 12 layer/head pairs, wall and process CPU):")
            print(f"  one head's TxT matrix       {both('head_matrix_ms', 1)}")
            print(f"  one query row of one head   {both('query_row_ms', 2)}")
            print(f"  attn[0, :, pos, :].mean(0)  {both('all_heads_row_mean_ms', 2)}  (every head's row, guide's flow)")
            print(f"  a whole layer, all heads    {both('whole_layer_ms', 0)}")
            kept = timing["kept_bytes"]
            if "eager" in kept:
                print(f"  capture with store_dtype=torch.float16 keeps {_kept(timing['kept_fp16_bytes'])}: "
                      f"{kept['eager'] / timing['kept_fp16_bytes']:.1f}x fewer bytes than eager")
    resets = [m.get("peak_reset") for _, _, _, memory in rows for m in memory.values() if "peak_reset" in m]
    if resets and not all(resets):
        print("note: the peak-RSS counter could not be reset here; peaks include the model build")
    print("\nper-repeat seconds:", json.dumps({r[0]: r[2].get("all_s") for r in rows}))


if __name__ == "__main__":
    main()
