"""The demo model: how long loading and predicting take, and what the training forward saves.

Run:  .venv/bin/python benchmarks/bench_demo.py            (3 repeats)
      .venv/bin/python benchmarks/bench_demo.py --quick    (1 repeat)

Three measurements on this machine's CPU (torch threads fixed with --threads):

1. ``load_demo_model()`` wall time, in a fresh subprocess each time (imports included,
   as a user's first call pays them) and the load call alone.
2. ``finwidget.predict`` on 64 demo statements (batch 32): statements per second.
3. One training step (forward + backward, batch 16 demo prompts) of the shipped
   model's shape, side by side:
   - anchor:    transformers' own forward, ``model(..., logits_to_keep=1)``,
   - finwidget: ``answer_position_logits`` (last layer only at the answer position),
   interleaved in one process; median wall time and process CPU time; ratio.

Nothing here asserts: it prints. The CPU is shared with other work while this runs,
so wall times are noisy; the CPU-time ratio is the steadier number.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

LOAD_SNIPPET = (
    "import time; t = time.perf_counter(); import torch; torch.set_num_threads({threads}); "
    "from finwidget.demo import load_demo_model; t1 = time.perf_counter(); load_demo_model(); "
    "t2 = time.perf_counter(); print(t2 - t, t2 - t1)"
)


def bench_load(repeats: int, threads: int) -> tuple[list[float], list[float]]:
    totals, calls = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET.format(threads=threads)], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        totals.append(float(out[-2]))
        calls.append(float(out[-1]))
    return totals, calls


def bench_predict(repeats: int) -> list[float]:
    from finwidget import load_demo_model
    from finwidget.demo import make_statements
    from finwidget.task import predict

    model, tokenizer = load_demo_model()
    texts = [s.text for s in make_statements(64, 5)]
    predict(model, tokenizer, texts[:8], batch_size=8)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(model, tokenizer, texts, batch_size=32)
        rates.append(len(texts) / (time.perf_counter() - start))
    return rates


def bench_training_step(repeats: int) -> tuple[dict[str, dict[str, list[float]]], tuple[int, ...]]:
    import torch
    from transformers import AutoTokenizer

    from finwidget.demo import MODEL_DIR, make_statements
    from finwidget.demo.answer_forward import answer_position_logits
    from finwidget.demo.train import TrainConfig, _batch, build_model
    from finwidget.task import EarningsTask

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    task = EarningsTask(tokenizer)
    model = build_model(TrainConfig(), tokenizer)
    model.train()
    batch, targets = _batch(task, make_statements(16, 6))
    ways = {
        "anchor: full forward": lambda: model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1).logits[:, -1],
        "finwidget: answer_position_logits": lambda: answer_position_logits(
            model, batch["input_ids"], batch["attention_mask"]),
    }
    results = {name: {"wall": [], "cpu": []} for name in ways}
    for _ in range(repeats + 1):  # first round is a warm-up
        for name, forward in ways.items():
            model.zero_grad(set_to_none=True)
            wall, cpu = time.perf_counter(), time.process_time()
            torch.nn.functional.cross_entropy(forward().float(), targets).backward()
            results[name]["wall"].append(time.perf_counter() - wall)
            results[name]["cpu"].append(time.process_time() - cpu)
    for timings in results.values():
        for key in timings:
            timings[key] = timings[key][1:]
    return results, tuple(batch["input_ids"].shape)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, repeats {repeats}")

    totals, calls = bench_load(repeats, args.threads)
    print(f"load_demo_model: median {statistics.median(calls):.2f} s for the call, "
          f"{statistics.median(totals):.2f} s with imports (fresh process)")

    rates = bench_predict(repeats)
    print(f"predict: median {statistics.median(rates):.1f} statements/s (64 statements, batch 32)")

    results, shape = bench_training_step(repeats)
    print(f"training step (forward + backward), batch input_ids {list(shape)}:")
    anchor = results["anchor: full forward"]
    for name, timings in results.items():
        wall, cpu = statistics.median(timings["wall"]), statistics.median(timings["cpu"])
        print(f"  {name:38s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
              f"ratio to anchor: wall {wall / statistics.median(anchor['wall']):.2f}  "
              f"cpu {cpu / statistics.median(anchor['cpu']):.2f}")


if __name__ == "__main__":
    main()
