"""Truth tests on the shipped demo model, whose label rule is known:

    increase  iff  change in Net income > 0  AND  change in Operating cash flow > 0

The sweep must find the heads the task depends on, attribution patching must rank heads
like the real sweep, and activation patching must put the effect on the rule's line.
All statements come from held-out seeds (training uses seeds >= 1,000,000, validation 777).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import single_thread

from finwidget import load_demo_model
from finwidget.demo import make_statement_pairs, make_statements
from finwidget.interventions import (
    CachedRun,
    HeadOutputs,
    InterventionSet,
    activation_patching,
    attribution_patching,
    rank_agreement,
    summarize_sweep,
    sweep_heads,
)
from finwidget.task import EarningsTask

RANKING_SEED = 31_337  # statements the sweep ranks heads on
HELD_OUT_SEED = 424_242  # statements accuracy is measured on
REFERENCE_SEED = 8_080  # statements whose mean head outputs replace a head (mean ablation)
PAIRS_SEED = 555


one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

@pytest.fixture(scope="module")
def demo():
    model, tokenizer = load_demo_model()
    task = EarningsTask(tokenizer)
    ranking = make_statements(32, RANKING_SEED)
    reference = HeadOutputs.record(model, task.encode([s.text for s in make_statements(64, REFERENCE_SEED)]))
    held_out = make_statements(200, HELD_OUT_SEED)
    run = CachedRun(model, task, [s.text for s in held_out])
    return model, tokenizer, task, ranking, reference, held_out, run


def _accuracy(predictions, statements) -> float:
    return float(np.mean([p.label == s.label for p, s in zip(predictions, statements)]))


def _ranked_heads(sweep) -> list[tuple[int, int]]:
    return [(int(layer), int(head)) for layer, head in summarize_sweep(sweep)[["layer", "head"]].to_numpy()]


def test_the_model_solves_the_task_before_any_intervention(demo):
    *_, held_out, run = demo
    assert _accuracy(run.clean, held_out) >= 0.98


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_sweep_ranks_the_heads_the_task_depends_on(demo, mode):
    """Top 3 heads by the sweep, removed together, destroy the task; 3 random other heads do not.

    Mean ablation (the head's output replaced by its average over reference statements) is
    the criterion: zero ablation pushes a head to a value it never takes, and what the model
    does then depends on that artificial bias as much as on the mechanism (see the model card).
    """
    model, _, task, ranking, reference, held_out, run = demo
    sweep = sweep_heads(model, task, ranking, mode=mode, reference=reference, batch_size=48, progress=False)
    ranked = _ranked_heads(sweep)
    top3 = ranked[:3]
    clean = _accuracy(run.clean, held_out)
    top = _accuracy(run.predict(InterventionSet.ablating(top3, mode=mode), reference=reference), held_out)
    draws = random.Random(0)
    others = ranked[3:]
    costs = []
    for _ in range(5):
        heads = draws.sample(others, 3)
        costs.append(clean - _accuracy(run.predict(InterventionSet.ablating(heads, mode=mode), reference=reference),
                                       held_out))
    assert np.mean(costs) <= 0.05, costs
    if mode == "mean":
        assert top <= 0.60, (top3, top)
    else:
        # measured: 0.663 (recorded in the model card); the single top head alone gives chance
        single = _accuracy(run.predict(InterventionSet.ablating(top3[:1])), held_out)
        assert single <= 0.60, (top3[0], single)
        assert top < clean - 0.25
    assert {layer for layer, _ in top3[:2]} == {0}  # the two heads that matter most read the lines in layer 0


def test_attribution_patching_ranks_heads_like_the_real_sweep(demo):
    model, _, task, ranking, *_ = demo
    texts = [s.text for s in ranking]
    estimate = attribution_patching(model, task, texts)
    real = sweep_heads(model, task, texts, batch_size=48, progress=False)
    rho = rank_agreement(estimate, real)  # heads ranked by mean |effect| over statements
    assert rho >= 0.8, rho


def _line_groups(tokenizer, prompt: str) -> dict[str, list[int]]:
    """Token positions of each line of the prompt, keyed by the line's text before ':' (or the line)."""
    offsets = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    groups: dict[str, list[int]] = {}
    start = 0
    for line in prompt.split("\n"):
        end = start + len(line)
        name = line.split(":")[0] if ":" in line else line
        positions = [i for i, (a, b) in enumerate(offsets) if b > a and start <= a < end + 1]
        if positions:
            groups.setdefault(name, []).extend(positions)
        start = end + 1
    return groups


def test_activation_patching_puts_the_effect_on_the_rule_line(demo):
    """Patching one line of the statement at a time: at every layer, only the line whose
    rule item differs carries the difference (the answer position reads it in layer 1)."""
    model, tokenizer, task, *_ = demo
    checked = 0
    for pair in make_statement_pairs(6, PAIRS_SEED):
        prompt = task.prompt(pair.clean.text)
        groups = _line_groups(tokenizer, prompt)
        assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) == task.encode(pair.clean.text)["input_ids"].shape[1]
        result = activation_patching(model, task, pair.clean.text, pair.corrupted.text, position_groups=groups)
        rule_line = result.columns.index(pair.flipped_item)
        assert set(result.differing_positions) <= set(groups[pair.flipped_item])
        for layer in range(result.recovered.shape[0]):
            row = result.recovered[layer]
            assert row[rule_line] >= 0.9, (pair.flipped_item, layer, dict(zip(result.columns, row.round(3))))
            others = np.delete(row, rule_line)
            assert np.abs(others).max() <= 0.1, (pair.flipped_item, layer, dict(zip(result.columns, row.round(3))))
        checked += 1
    assert checked == 6
