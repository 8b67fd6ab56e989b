"""Measure a demo model's accuracy on fresh statements, the way a user would.

    python -m finwidget.demo.evaluate --seed 12345 --n 1000
    python -m finwidget.demo.evaluate --model /tmp/other_model --json
    python -m finwidget.demo.evaluate --model finwidget/demo/layouts_model --layout each   # one report per layout

It loads the model with ``finwidget.load_model`` (the shipped one by default, as
``load_demo_model`` does), predicts with ``finwidget.predict`` and compares each
prediction with the planted rule. Besides the overall accuracy it reports the
accuracy per rule pattern (which of the two rule items rose) and what each rule item
alone would score, so a reader can tell whether the model uses both items.
``--layout`` writes the statements in another layout (``make_statements(layout=...)``);
``--layout each`` evaluates every layout on the same statements (same seed: the same
numbers, years and line order, written differently) and reports each one.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from finwidget.strict_json import strict_dumps

HELD_OUT_SEED = 12345


@dataclass
class Evaluation:
    """Accuracy of a model's predictions against the planted rule.

    accuracy: share of statements whose predicted label equals the rule's label.
    by_pattern: ``"NI+ OCF-"``-style pattern of the two rule items' change signs ->
        ``{"n": count, "accuracy": share}``.
    single_item_baselines: accuracy of predicting "increase" iff one rule item rose.
    mean_abs_logit_diff: mean ``|logit(increase) - logit(decrease)|`` (confidence).
    """

    n: int
    seed: int
    accuracy: float
    by_pattern: dict[str, dict] = field(default_factory=dict)
    single_item_baselines: dict[str, float] = field(default_factory=dict)
    mean_abs_logit_diff: float = 0.0
    seconds: float = 0.0
    layout: str = "line"  # how the statements were written (make_statements(layout=...))
    rule: str = "both"  # which rule labelled them (make_statements(rule=...))


def _pattern_name(signs: tuple[int, int]) -> str:
    return " ".join(f"{name}{'+' if s > 0 else '-'}" for name, s in zip(("NI", "OCF"), signs))


def evaluate(model, tokenizer, n: int = 1000, seed: int = HELD_OUT_SEED, batch_size: int = 32,
             layout: str = "line", rule: str = "both") -> Evaluation:
    """Predict ``n`` statements made with ``seed`` (written in ``layout``) and score them
    against ``rule`` (``"both"``: the planted rule; ``"net_income_only"``: the fine-tuned
    variant's)."""
    from finwidget.demo.statements import RULE_ITEMS, make_statements
    from finwidget.task import predict

    statements = make_statements(n, seed, layout=layout, rule=rule)
    started = time.perf_counter()
    predictions = predict(model, tokenizer, [s.text for s in statements], batch_size=batch_size)
    seconds = time.perf_counter() - started

    correct = [p.label == s.label for p, s in zip(predictions, statements)]
    groups: dict[str, list[bool]] = defaultdict(list)
    for s, ok in zip(statements, correct):
        groups[_pattern_name(s.rule_signs)].append(ok)
    baselines = {
        item: sum((s.rule_signs[i] > 0) == (s.label == "increase") for s in statements) / n
        for i, item in enumerate(RULE_ITEMS)
    }
    return Evaluation(
        n=n,
        seed=seed,
        accuracy=sum(correct) / n,
        by_pattern={k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(groups.items())},
        single_item_baselines=baselines,
        mean_abs_logit_diff=sum(abs(p.logit_diff) for p in predictions) / n,
        seconds=seconds,
        layout=layout,
        rule=rule,
    )


def evaluate_layouts(model, tokenizer, n: int = 1000, seed: int = HELD_OUT_SEED, batch_size: int = 32,
                     layouts=None) -> dict[str, Evaluation]:
    """``evaluate`` once per layout (default: every layout in ``LAYOUTS``), on the same
    statements written in each layout; returns layout -> Evaluation."""
    from finwidget.demo.statements import LAYOUTS

    return {layout: evaluate(model, tokenizer, n=n, seed=seed, batch_size=batch_size, layout=layout)
            for layout in (layouts or LAYOUTS)}


def _print_report(result: Evaluation) -> None:
    print(f"held-out accuracy ({result.layout} layout, rule {result.rule}): {result.accuracy:.4f} on {result.n} statements "
          f"(seed {result.seed}), {result.seconds:.1f} s")
    for name, row in result.by_pattern.items():
        print(f"  {name:10s} n={row['n']:5d}  accuracy {row['accuracy']:.4f}")
    for item, acc in result.single_item_baselines.items():
        print(f"  rule item alone ({item}): {acc:.4f}")
    print(f"  mean |logit diff|: {result.mean_abs_logit_diff:.2f}")


def main(argv=None) -> None:
    import torch

    from finwidget.demo import MODEL_DIR
    from finwidget.loading import load_model

    parser = argparse.ArgumentParser(description="Held-out accuracy of the demo model against its planted rule.")
    parser.add_argument("--model", default=str(MODEL_DIR), help="model folder (default: the shipped demo model)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="statement seed (never used in training)")
    parser.add_argument("--n", type=int, default=1000, help="number of statements")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layout", default="line",
                        help="statement layout: line, markdown, aligned, mixed, or each (one report per layout, "
                             "n statements each)")
    parser.add_argument("--rule", default="both", help="the rule that labels the statements: both (the planted "
                        "rule) or net_income_only (the fine-tuned variant's, finwidget.demo.finetune)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, device="cpu", dtype=torch.float32)
    if args.layout == "each":
        results = evaluate_layouts(model, tokenizer, n=args.n, seed=args.seed, batch_size=args.batch_size)
    else:
        results = {args.layout: evaluate(model, tokenizer, n=args.n, seed=args.seed, batch_size=args.batch_size,
                                         layout=args.layout, rule=args.rule)}
    if args.json:
        payload = {name: asdict(result) for name, result in results.items()}
        print(strict_dumps(payload if args.layout == "each" else payload[args.layout], "the evaluation result",
                           indent=1))
        return
    print(f"model: {args.model}")
    for result in results.values():
        _print_report(result)


if __name__ == "__main__":
    main()
