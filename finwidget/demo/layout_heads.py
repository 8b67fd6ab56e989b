"""Which heads a demo model uses in each statement layout, measured with finwidget's own tools.

    python -m finwidget.demo.layout_heads                      # the layouts model, every layout
    python -m finwidget.demo.layout_heads --n 200 --json
    python -m finwidget.demo.layout_heads --together      # also the card's sets of heads removed together

The guide's robustness question, "do the same heads read net income in every layout?",
asked of a model whose rule is known. For each layout (``LAYOUTS``), on the same held-out
statements written in that layout:

- ``ablation_by_layout``: every head ablated alone (``CachedRun`` with an
  ``InterventionSet``: mean ablation replaces the head's output by its average over
  reference statements of the same layout; zero ablation sets it to 0); the accuracy
  against the planted rule and the mean |change| of the logit difference.
- ``rule_line_attention``: attention recomputed from ``capture_attention``: in layer 0,
  the share of attention from the digits of each rule line to that line's sign token (the
  ``+``/``-`` of its change); in the last layer, the share of attention from the answer
  position to each rule line.
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import torch

RANKING_SEED = 424_242  # held-out statements the heads are scored on (not a training or validation seed)
REFERENCE_SEED = 8_080  # statements whose mean head outputs replace a head (mean ablation)
ATTENTION_SEED = 999  # statements whose attention is measured


def _accuracy(diffs: torch.Tensor, labels: list[str]) -> float:
    truth = torch.tensor([label == "increase" for label in labels])
    return float(((diffs > 0) == truth).float().mean())


def ablation_by_layout(model, tokenizer, n: int = 200, seed: int = RANKING_SEED, reference_n: int = 64,
                       reference_seed: int = REFERENCE_SEED, layouts=None, modes=("mean", "zero"),
                       head_sets=None) -> pd.DataFrame:
    """Accuracy and logit-difference change with heads ablated, per layout.

    head_sets: a list of head lists to ablate together (each ``[(layer, head), ...]``);
        default: every single head.

    Returns a DataFrame with one row per (layout, mode, head set): ``layout, mode, heads``
    (e.g. ``"L0H1"`` or ``"L0H1+L0H2"``), ``accuracy`` (against the planted rule),
    ``clean_accuracy``, ``mean_abs_change`` and ``mean_change`` of the logit difference,
    ``flip_rate`` (share of statements whose predicted label changed), ``n``.
    """
    from finwidget.demo.statements import LAYOUTS, make_statements
    from finwidget.interventions import CachedRun, HeadOutputs, InterventionSet
    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)
    config = model.config
    if head_sets is None:
        head_sets = [[(layer, head)] for layer in range(config.num_hidden_layers)
                     for head in range(config.num_attention_heads)]
    rows = []
    for layout in (layouts or LAYOUTS):
        statements = make_statements(n, seed, layout=layout)
        labels = [s.label for s in statements]
        reference = HeadOutputs.record(model, task.encode(
            [s.text for s in make_statements(reference_n, reference_seed, layout=layout)]))
        run = CachedRun(model, task, [s.text for s in statements])
        clean = run.clean_logit_diff
        for mode in modes:
            sets = [InterventionSet.ablating(heads, mode=mode) for heads in head_sets]
            diffs = run.logit_diffs(sets, reference=reference if mode == "mean" else None)  # [sets, n]
            for heads, row in zip(head_sets, diffs):
                change = row - clean
                rows.append({
                    "layout": layout, "mode": mode, "heads": "+".join(f"L{l}H{h}" for l, h in heads),
                    "accuracy": _accuracy(row, labels), "clean_accuracy": _accuracy(clean, labels),
                    "mean_abs_change": float(change.abs().mean()), "mean_change": float(change.mean()),
                    "flip_rate": float(((row > 0) != (clean > 0)).float().mean()), "n": n,
                })
    return pd.DataFrame(rows)


TOP_THREE = [(0, 1), (0, 2), (1, 0)]  # the layouts model's top 3 by mean |change| (its model card)


def card_head_sets(num_layers: int = 2, num_heads: int = 4, top=TOP_THREE, draws: int = 5, seed: int = 0):
    """The heads the model card removes together: L0H1 + L0H2, the top 3, the five other
    heads, all layer-1 heads, L1H0 + L1H1, L1H0 + L1H1 + L1H3, and ``draws`` random sets of
    3 heads outside the top 3 (``random.Random(seed)``)."""
    import random

    heads = [(layer, head) for layer in range(num_layers) for head in range(num_heads)]
    others = [h for h in heads if h not in top]
    rng = random.Random(seed)
    random_sets = [rng.sample(others, 3) for _ in range(draws)]
    last = num_layers - 1
    return ([list(top[:2]), list(top), others, [(last, h) for h in range(num_heads)], [(1, 0), (1, 1)],
             [(1, 0), (1, 1), (1, 3)]] + random_sets)


def _line_spans(text: str) -> list[tuple[int, int, str]]:
    spans, start = [], 0
    for line in text.split("\n"):
        spans.append((start, start + len(line), line))
        start += len(line) + 1
    return spans


def rule_line_tokens(text: str, offsets: list[tuple[int, int]], item: str) -> dict[str, list[int]]:
    """Token indices of ``item``'s row in ``text`` (any layout): ``row`` (every token that
    starts in the row's line), ``sign`` (the first ``+``/``-`` token after the item name:
    the sign of its change), ``digits`` (the digit tokens of the row's three numbers; the
    year labels of the line layout, ``2022:``, are not counted)."""
    import re

    for start, end, line in _line_spans(text):
        rest = line.lstrip("| ").lstrip()
        if rest.startswith(item) and rest[len(item):len(item) + 1] in (":", " "):
            name_end = start + line.index(item) + len(item)
            row = [i for i, (a, b) in enumerate(offsets) if start <= a < end and b > a]
            sign = [i for i in row if offsets[i][0] >= name_end and text[offsets[i][0]:offsets[i][1]].strip() in "+-"
                    and text[offsets[i][0]:offsets[i][1]].strip()]
            labels = [(start + m.start(), start + m.end()) for m in re.finditer(r"\d{4}:", line)]
            digits = [i for i in row if text[offsets[i][0]:offsets[i][1]].isdigit()
                      and not any(a <= offsets[i][0] < b for a, b in labels)]
            return {"row": row, "sign": sign[:1], "digits": digits}
    raise ValueError(f"no row for {item!r} in the statement")


def rule_line_attention(model, tokenizer, n: int = 40, seed: int = ATTENTION_SEED, layouts=None) -> pd.DataFrame:
    """Attention the heads pay to the rule lines, per layout (means over ``n`` statements).

    Returns one row per (layout, layer, head, item): ``digits_to_sign`` (layer-0 rows:
    share of attention from the item's digit tokens to its change's sign token, averaged
    over the digits) and ``answer_to_row`` (every layer: share of attention from the answer
    position to the item's row).
    """
    from finwidget.capture import capture_attention
    from finwidget.demo.statements import LAYOUTS, RULE_ITEMS, make_statements
    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)
    config = model.config
    sums: dict[tuple, list[tuple[float, float]]] = {}  # (to_sign, to_row) per statement
    for layout in (layouts or LAYOUTS):
        for statement in make_statements(n, seed, layout=layout):
            prompt = task.prompt(statement.text)
            encoded = tokenizer(prompt, return_offsets_mapping=True)
            ids = torch.tensor([encoded["input_ids"]])
            with capture_attention(model) as capture, torch.inference_mode():
                model(input_ids=ids)
                per_layer = {layer: capture.attention(layer) for layer in range(config.num_hidden_layers)}  # [H, T, T]
            answer = ids.shape[1] - 1
            for item in RULE_ITEMS:
                tokens = rule_line_tokens(prompt, encoded["offset_mapping"], item)
                for layer, attention in per_layer.items():
                    for head in range(config.num_attention_heads):
                        key = (layout, layer, head, item)
                        to_row = float(attention[head, answer, tokens["row"]].sum())
                        to_sign = float(attention[head][tokens["digits"]][:, tokens["sign"]].sum(-1).mean())
                        sums.setdefault(key, []).append((to_sign, to_row))
    rows = []
    for (layout, layer, head, item), values in sums.items():
        signs, answers = zip(*values)
        rows.append({"layout": layout, "layer": layer, "head": head, "item": item,
                     "digits_to_sign": sum(signs) / len(signs), "answer_to_row": sum(answers) / len(answers)})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    from finwidget.demo import load_demo_model
    from finwidget.loading import load_model

    parser = argparse.ArgumentParser(description="Head ablation and rule-line attention per statement layout.")
    parser.add_argument("--model", default=None, help="model folder (default: the layouts demo model)")
    parser.add_argument("--n", type=int, default=200, help="statements per layout for the ablations")
    parser.add_argument("--attention-n", type=int, default=40, help="statements per layout for attention")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--together", action="store_true",
                        help="also remove the model card's sets of heads together (card_head_sets)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        model, tokenizer = load_model(args.model, device="cpu", dtype=torch.float32)
    else:
        model, tokenizer = load_demo_model(variant="layouts")
    ablation = ablation_by_layout(model, tokenizer, n=args.n)
    together = ablation_by_layout(model, tokenizer, n=args.n, head_sets=card_head_sets()) if args.together else None
    attention = rule_line_attention(model, tokenizer, n=args.attention_n)
    if args.json:
        print(json.dumps({"ablation": ablation.to_dict("records"), "attention": attention.to_dict("records"),
                          "together": None if together is None else together.to_dict("records")}))
        return
    pd.set_option("display.width", 200)
    for mode in ("mean", "zero"):
        table = ablation[ablation["mode"] == mode].pivot(index="heads", columns="layout", values="accuracy")
        print(f"accuracy with one head {mode}-ablated ({args.n} statements per layout):\n{table.round(3)}\n")
        table = ablation[ablation["mode"] == mode].pivot(index="heads", columns="layout", values="mean_abs_change")
        print(f"mean |change| of the logit difference, {mode} ablation:\n{table.round(2)}\n")
    layer0 = attention[attention["layer"] == 0].pivot_table(index=["head", "item"], columns="layout",
                                                           values="digits_to_sign")
    print(f"layer 0, attention from a rule line's digits to its sign token:\n{layer0.round(2)}\n")
    last = attention[attention["layer"] == attention["layer"].max()].pivot_table(
        index=["head", "item"], columns="layout", values="answer_to_row")
    print(f"last layer, attention from the answer position to the rule line:\n{last.round(2)}")
    if together is not None:
        together = together.assign(set=together.groupby(["layout", "mode"]).cumcount())
        for mode in ("mean", "zero"):
            rows = pd.DataFrame(together[together["mode"] == mode])
            table = rows.pivot(index=["set"], columns="layout", values="accuracy")
            first_layout = pd.DataFrame(rows[rows["layout"] == rows["layout"].iloc[0]])
            table["heads"] = first_layout.set_index("set")["heads"]
            print(f"\naccuracy with heads {mode}-ablated together:\n{table.round(3)}")


if __name__ == "__main__":
    main()
