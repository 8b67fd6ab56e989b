"""Per-head analysis of one statement, side by side: the guide's way vs finwidget's.

Run:  .venv/bin/python benchmarks/bench_analysis.py                 (T ~ 512, 1024, 2048)
      .venv/bin/python benchmarks/bench_analysis.py --quick         (T ~ 512, 1024; 1 repeat)

Model: a random Qwen2-shaped model (12 layers, hidden 768, 12 query heads over 2 KV
heads, MLP 3072), float32, CPU. Input: a synthetic financial statement in the demo
format, tokenized by the demo tokenizer and cut to about T tokens.

Two workloads, each done two ways:

``heads`` (the guide's Steps 3 and 4: every head's measurements, and the answer row):
- guide:     ``model(..., output_attentions=True)`` on the eager path, then the guide's
             Step 3 loop (``attn[0, h].numpy()``, ``np.diag``, first-10-columns mean,
             entropy) over every layer and head, plus Step 4's answer-row attention.
- finwidget: the SDPA forward under ``capture_attention`` (post-RoPE Q/K kept), then
             ``head_specialization`` (self, sink, previous-token, entropy, attention to
             financial terms / numbers / years, head type; chunked, 64 MiB cap) and
             ``prediction_attention`` (answer row to every span), plus ``read_statement``.
  finwidget computes more per head than the guide's loop (seven measurements against
  three, in spans), so the comparison favours the guide on work done.

``prediction`` (Step 4 alone: what the answer position reads, every layer and head):
- guide:     the eager forward with ``output_attentions=True``, then ``attn[0, :, -1, :]``
             per layer;
- finwidget: the captured SDPA forward, then ``prediction_attention`` (every layer and
             head, by span) and ``read_statement``.

Time: median wall time of ``--repeats`` runs after a warm-up, the two ways interleaved
in one process. Memory: each way runs again in a fresh subprocess; reported is the
peak RSS above the RSS before the forward pass (model built, statement read). Nothing
here asserts: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

WAYS = ("guide", "finwidget")
GEOMETRY = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 2,
            "intermediate_size": 3072}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _statement(tokenizer, length: int):
    """A demo-format statement text whose prompt is about ``length`` tokens, and its ids."""
    from finwidget.demo import make_statements
    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)
    question = "Question: Will earnings increase or decrease next year?"
    body, seed = [], 0
    while True:
        for line in make_statements(1, seed)[0].text.splitlines():
            if line != question:
                body.append(line)
        text = "\n".join(body + [question])
        ids = task.encode(text)["input_ids"]
        if ids.shape[1] >= length:
            return text, task, task.encode(text)
        seed += 1


def _setup(length: int, threads: int):
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from finwidget.demo import MODEL_DIR
    from finwidget.statement import read_statement

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    config = Qwen2Config(max_position_embeddings=8192, vocab_size=max(1024, len(tokenizer)), **GEOMETRY)
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config).eval()
    text, task, batch = _statement(tokenizer, length)
    return model, tokenizer, text, task, batch, read_statement


def run_guide_prediction(model, batch) -> dict:
    """The guide's Step 4 rows on eager ``output_attentions``."""
    import torch

    with torch.inference_mode():
        model.set_attn_implementation("eager")
        try:
            out = model(**batch, logits_to_keep=1, output_attentions=True)
        finally:
            model.set_attn_implementation("sdpa")
    rows = [attn[0, :, -1, :] for attn in out.attentions]
    return {"rows": len(rows), "kept_bytes": sum(a.numel() * a.element_size() for a in out.attentions)}


def run_finwidget_prediction(model, tokenizer, text, task, batch, read_statement) -> dict:
    import torch

    from finwidget.analysis import prediction_attention
    from finwidget.capture import capture_attention

    layout = read_statement(text, tokenizer, task=task)
    with torch.inference_mode(), capture_attention(model) as cap:
        model(**batch, logits_to_keep=1)
    table = prediction_attention(cap, layout)
    return {"rows": len(table), "kept_bytes": cap.nbytes}


def run_guide(model, batch) -> dict:
    """The guide's Steps 3-4 on eager ``output_attentions``."""
    import numpy as np
    import torch

    with torch.inference_mode():
        model.set_attn_implementation("eager")
        try:
            out = model(**batch, logits_to_keep=1, output_attentions=True)
        finally:
            model.set_attn_implementation("sdpa")
    attention_weights = {f"layer_{i}": a for i, a in enumerate(out.attentions)}
    rows = []
    for layer_name, attn in attention_weights.items():
        for head_idx in range(attn.shape[1]):
            attention_matrix = attn[0, head_idx].numpy()
            diagonal_attention = np.diag(attention_matrix).mean()
            beginning_attention = attention_matrix[:, :10].mean()
            entropy = -(attention_matrix * np.log(attention_matrix + 1e-10)).sum(axis=1).mean()
            rows.append((layer_name, head_idx, diagonal_attention, beginning_attention, entropy))
        attn[0, :, -1, :].mean(dim=0)
    return {"rows": len(rows), "kept_bytes": sum(a.numel() * a.element_size() for a in out.attentions)}


def run_finwidget(model, tokenizer, text, task, batch, read_statement) -> dict:
    import torch

    from finwidget.analysis import head_specialization, prediction_attention
    from finwidget.capture import capture_attention

    layout = read_statement(text, tokenizer, task=task)
    with torch.inference_mode(), capture_attention(model) as cap:
        model(**batch, logits_to_keep=1)
    table = head_specialization(cap, layout)
    prediction_attention(cap, layout)
    return {"rows": len(table), "kept_bytes": cap.nbytes}


def _run(way: str, state, workload: str = "heads") -> dict:
    model, tokenizer, text, task, batch, read_statement = state
    if workload == "prediction":
        if way == "guide":
            return run_guide_prediction(model, batch)
        return run_finwidget_prediction(model, tokenizer, text, task, batch, read_statement)
    if way == "guide":
        return run_guide(model, batch)
    return run_finwidget(model, tokenizer, text, task, batch, read_statement)


def worker_memory(way: str, length: int, threads: int, workload: str) -> dict:
    import gc

    state = _setup(length, threads)
    gc.collect()
    before = _status_bytes("VmRSS")
    result = _run(way, state, workload)
    peak = _status_bytes("VmHWM")
    return {"way": way, "tokens": int(state[4]["input_ids"].shape[1]), "peak_above_start": peak - before,
            "kept_bytes": result["kept_bytes"]}


def worker_timing(length: int, repeats: int, threads: int, workload: str) -> dict:
    state = _setup(length, threads)
    times = {w: [] for w in WAYS}
    for way in WAYS:  # warm-up
        _run(way, state, workload)
    for _ in range(repeats):
        for way in WAYS:
            start = time.perf_counter()
            _run(way, state, workload)
            times[way].append(time.perf_counter() - start)
    return {"tokens": int(state[4]["input_ids"].shape[1]), "median_s": {w: statistics.median(v) for w, v in times.items()},
            "all_s": times}


def _spawn(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workloads", nargs="+", choices=("heads", "prediction"), default=["heads", "prediction"])
    parser.add_argument("--worker", choices=("memory", "timing"), help=argparse.SUPPRESS)
    parser.add_argument("--way", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "memory":
        print(json.dumps(worker_memory(args.way, args.lengths[0], args.threads, args.workloads[0])))
        return
    if args.worker == "timing":
        print(json.dumps(worker_timing(args.lengths[0], args.repeats, args.threads, args.workloads[0])))
        return

    lengths = args.lengths or ([512, 1024] if args.quick else [512, 1024, 2048])
    repeats = 1 if args.quick else args.repeats
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch "
          f"threads, python {platform.python_version()}, load average at start {load}")
    for workload in args.workloads:
        _table(workload, lengths, repeats, args.threads)


def _table(workload: str, lengths: list[int], repeats: int, threads: int) -> None:
    what = {"heads": "every head's measurements + answer row (Steps 3-4)",
            "prediction": "answer-position attention, every layer and head (Step 4)"}[workload]
    print(f"\nworkload '{workload}': {what}; 12 layers x 12 heads")
    header = (f"{'T':>6} | {'guide s':>8} | {'finwidget s':>11} | {'speed-up':>8} | {'guide peak MB':>13} | "
              f"{'finwidget peak MB':>17} | {'memory ratio':>12} | {'kept guide MiB':>14} | {'kept fw MiB':>11}")
    print(header)
    print("-" * len(header))
    for length in lengths:
        common = ["--lengths", str(length), "--threads", str(threads), "--workloads", workload]
        timing = _spawn(["--worker", "timing", "--repeats", str(repeats), *common])
        memory = {w: _spawn(["--worker", "memory", "--way", w, *common]) for w in WAYS}
        if "error" in timing or any("error" in m for m in memory.values()):
            print(f"{length:>6} | error: {timing.get('error') or [m.get('error') for m in memory.values()]}")
            continue
        g, f = timing["median_s"]["guide"], timing["median_s"]["finwidget"]
        gm, fm = memory["guide"]["peak_above_start"], memory["finwidget"]["peak_above_start"]
        print(f"{timing['tokens']:>6} | {g:>8.2f} | {f:>11.2f} | {g / f:>7.2f}x | {gm / 2**20:>13,.0f} | "
              f"{fm / 2**20:>17,.0f} | {gm / max(fm, 1):>11.1f}x | {memory['guide']['kept_bytes'] / 2**20:>14,.1f} | "
              f"{memory['finwidget']['kept_bytes'] / 2**20:>11,.1f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
