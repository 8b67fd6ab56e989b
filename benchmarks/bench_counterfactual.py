"""Counterfactuals on the demo model: editing, sweeping and patching across lengths.

Run:  .venv/bin/python benchmarks/bench_counterfactual.py            (3 repeats)
      .venv/bin/python benchmarks/bench_counterfactual.py --quick    (1 repeat)

Measured (median wall time and process CPU time, torch threads fixed with --threads):

1. ``counterfactual(statement, SetChange(...))``: writing one edited statement (text only).
2. ``sensitivity`` over 41 values, ``batch_size=16`` (rows grouped by token length, no
   padding) against ``batch_size=1`` (one forward per value): the batching gain.
3. ``span_patching`` of one counterfactual whose edit changes the token length (every
   statement line at both layers) against ``activation_patching`` with the same groups on a
   same-length pair: what the alignment costs on top of the patching itself.

Nothing here asserts: it prints. The numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def timed(call, repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeats = 1 if args.quick else 3

    import torch

    torch.set_num_threads(args.threads)
    from finwidget import EarningsTask, load_demo_model
    from finwidget.counterfactuals import SetChange, SwapYears, counterfactual, sensitivity, span_patching
    from finwidget.demo import make_statements
    from finwidget.interventions import activation_patching

    model, tokenizer = load_demo_model()
    task = EarningsTask(tokenizer)
    statement = next(s for s in make_statements(20, 77) if s.label == "increase")
    values = list(range(-2000, 2001, 100))

    wall, cpu = timed(lambda: [counterfactual(statement, SetChange("Net income", v)) for v in values], repeats)
    print(f"counterfactual: {1000 * wall / len(values):.2f} ms wall, {1000 * cpu / len(values):.2f} ms CPU per edit")

    batched = timed(lambda: sensitivity(model, tokenizer, statement, "Net income", values, quantity="change",
                                        task=task, batch_size=16), repeats)
    single = timed(lambda: sensitivity(model, tokenizer, statement, "Net income", values, quantity="change",
                                       task=task, batch_size=1), repeats)
    print(f"sensitivity, {len(values)} values: batch 16 {batched[0]:.2f} s wall ({batched[1]:.2f} s CPU); "
          f"batch 1 {single[0]:.2f} s wall ({single[1]:.2f} s CPU); CPU ratio {single[1] / batched[1]:.2f}x")

    def prompt_length(text: str) -> int:
        return len(tokenizer(task.prompt(text))["input_ids"])

    longer = counterfactual(statement, SetChange("Net income", -1051))
    for candidate in make_statements(40, 77):  # an edit that changes the token length
        edited = counterfactual(candidate, SetChange("Net income", -1051))
        if candidate.label == "increase" and prompt_length(edited.text) != prompt_length(edited.original):
            statement, longer = candidate, edited
            break
    same = counterfactual(statement, SwapYears("Net income"))
    groups = {name: [b for _, b in pairs] for name, pairs in
              same.token_alignment(tokenizer, task).pairs_by("line", cover=True).items()}
    span_patching(model, task, longer)  # warm-up, both
    activation_patching(model, task, same.original, same.text, position_groups=groups)
    aligned = timed(lambda: span_patching(model, task, longer), repeats)
    positional = timed(lambda: activation_patching(model, task, same.original, same.text, position_groups=groups),
                       repeats)
    print(f"span_patching (lengths {prompt_length(longer.original)} -> {prompt_length(longer.text)}): "
          f"{aligned[0]:.2f} s wall ({aligned[1]:.2f} s CPU); "
          f"activation_patching, same groups, same length: {positional[0]:.2f} s wall ({positional[1]:.2f} s CPU)")


if __name__ == "__main__":
    main()
