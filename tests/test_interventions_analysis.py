"""Attribution patching, attention gradients and activation patching, checked against
independent computations (finite changes, transformers' eager attention, full forwards).

Comparisons of two float32 paths use tolerances measured here against float64 copies of
the model (reference_drift.py), never a constant that fits one CPU.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import full_forward_logit_diff, same_shape_statement, single_thread, statement
from reference_drift import cross_path_tolerance, logit_diff_tolerance

from finwidget.errors import InputError
from finwidget.interventions import (
    CachedRun,
    HeadIntervention,
    InterventionSet,
    activation_patching,
    attention_gradients,
    attribution_patching,
    rank_agreement,
    sweep_heads,
)

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

EPS = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def setup(tiny_setup):
    model, tokenizer, task = tiny_setup(seed=1, layers=3)
    return model, tokenizer, task


@pytest.fixture(scope="module")
def exact(setup):
    """Twice a plain forward's largest float32-vs-float64 logit-difference drift over the
    statements used here, plus two ulps of the logits (reference_drift.logit_diff_tolerance)."""
    model, _, task = setup
    texts = [statement(s, lines=3) for s in (11, 12, 15)]
    texts += [_flip_first_sign(t) for t in texts] + [statement(s) for s in range(3, 11)]
    batch = task.encode(texts)
    return float(logit_diff_tolerance(model, task, batch, full_forward_logit_diff(model, task, batch)).max())


def _flip_first_sign(text: str) -> str:
    """The corrupted statement: the first line's change with the opposite sign (same tokens count)."""
    index = min(i for i in (text.find("+"), text.find("-")) if i >= 0)
    return text[:index] + ("-" if text[index] == "+" else "+") + text[index + 1:]


def test_attribution_is_the_first_order_effect_of_each_head(setup, tiny_setup):
    """For a small change (scale by 1 + eps) the estimate must equal the real change / first order."""
    _model, _, task = setup
    model64 = tiny_setup(seed=1, layers=3)[0].double()
    texts = [statement(3, lines=3), statement(4, lines=2)]
    eps = 1e-3
    estimate = attribution_patching(model64, task, texts, mode="scale", value=1 + eps)
    real = sweep_heads(model64, task, texts, mode="scale", value=1 + eps, progress=False)
    merged = estimate.merge(real, on=["layer", "head", "statement"])
    assert len(merged) == 3 * 4 * 2
    error = (merged.estimated_change - merged.change).abs()
    assert (error <= 0.02 * merged.change.abs() + 1e-6).all(), merged[["estimated_change", "change"]]
    assert merged.change.abs().max() > 1e-4  # the effects are not all zero
    assert rank_agreement(estimate, real) > 0.99


def test_zero_ablation_estimate_agrees_with_the_other_modes_that_mean_zero(setup):
    model, _, task = setup
    texts = [statement(5, lines=3)]
    zero = attribution_patching(model, task, texts)
    assert list(zero.columns) == ["layer", "head", "mode", "estimated_change", "clean_logit_diff"]
    for mode in ("scale", "constant"):
        other = attribution_patching(model, task, texts, mode=mode, value=0.0)
        # gradient . (0 * out - out), gradient . (0 - out), gradient . (-out): the same numbers
        assert np.array_equal(other.estimated_change, zero.estimated_change)
    assert zero.estimated_change.abs().max() > 1e-3
    # the mean over a reference that is the statement itself, averaged over its tokens, is a different target
    mean = attribution_patching(model, task, texts, mode="mean", reference=texts)
    assert not np.allclose(mean.estimated_change, zero.estimated_change, atol=1e-4)


def test_patching_estimate_is_zero_for_identical_statements_and_refuses_other_lengths(setup):
    model, _, task = setup
    text = statement(6, lines=3)
    same = attribution_patching(model, task, text, corrupted=text)
    assert (same.estimated_change == 0).all() and (same["mode"] == "patch").all()
    different = attribution_patching(model, task, text, corrupted=same_shape_statement(text, 2))
    assert different.estimated_change.abs().max() > 1e-4
    with pytest.raises(InputError, match="same token lengths"):
        attribution_patching(model, task, text, corrupted=statement(7, lines=2))


def _eager_attention_gradients(model, task, batch):
    """transformers' eager attention with autograd: (attentions, objective [B], d objective / d attention)."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.enable_grad():
            out = model(**batch, output_attentions=True, use_cache=False)
            objective = (out.logits[:, -1, task.answer_token_ids[0]] - out.logits[:, -1, task.answer_token_ids[1]])
            gradients = torch.autograd.grad(objective.sum(), out.attentions)
    finally:
        model.set_attn_implementation(original)
    return out.attentions, objective.detach(), gradients


def test_attention_gradients_equal_autograd_through_transformers_eager_attention(setup):
    model, _, task = setup
    texts = [statement(8, lines=2), statement(9, lines=3)]
    ours = attention_gradients(model, texts, task=task)
    batch = task.encode(texts)
    attentions, objective, reference = _eager_attention_gradients(model, task, batch)
    real_rows = batch["attention_mask"].bool()
    # the float64 reference, each statement alone (float64 padding rows turn NaN, see reference_drift.py)
    model64 = copy.deepcopy(model).double()
    exact = [_eager_attention_gradients(model64, task, {"input_ids": batch["input_ids"][row][real_rows[row]][None]})[2]
             for row in range(len(texts))]
    for layer, expected in enumerate(reference):
        got = ours.gradients[f"layer_{layer}"]
        assert got.shape == expected.shape
        for row in range(len(texts)):  # padding query rows are discarded by the model: compare real rows
            keep = real_rows[row]
            want = expected[row][:, keep][:, :, keep]
            # two float32 paths: within twice eager's measured drift from float64, plus 2 ulps of the largest
            drift = float((want.double() - exact[row][layer][0]).abs().max())
            tolerance = 2 * drift + 2 * EPS * float(want.abs().max())
            diff = (got[row][:, keep][:, :, keep] - want).abs().max()
            assert diff <= tolerance, (layer, row, float(diff), tolerance)
    attention_tolerance = cross_path_tolerance(model, batch, attentions)
    for layer in range(len(attentions)):
        assert torch.allclose(ours.attention[f"layer_{layer}"][:, :, -1], attentions[layer][:, :, -1].float(),
                              rtol=0, atol=attention_tolerance)
    objective_tolerance = logit_diff_tolerance(model, task, batch, objective.float())
    assert ((ours.objective.double() - objective.double()).abs() <= objective_tolerance).all()
    scores = ours.head_scores(query=-1)
    assert len(scores) == 3 * 4 and scores.mean_abs_gradient.gt(0).any()


def test_attention_gradients_for_one_token_logit_like_the_guide(setup):
    model, _tokenizer, task = setup
    ids = task.encode(statement(10))["input_ids"]
    target = task.answer_token_ids[0]
    result = attention_gradients(model, ids, target_logit=target, layers=[2])
    assert list(result.gradients) == ["layer_2"]
    with torch.inference_mode():
        logit = float(model(input_ids=ids).logits[0, -1, target])
        exact = float(copy.deepcopy(model).double()(input_ids=ids).logits[0, -1, target])
    # two float32 paths to one logit: twice the plain forward's measured drift plus 2 ulps
    assert abs(logit - float(result.objective[0])) <= 2 * abs(logit - exact) + 2 * EPS * abs(exact)
    with pytest.raises(InputError, match="token id"):
        attention_gradients(model, ids, target_logit=10**9)


def test_residual_patching_is_exact_where_it_can_be_checked(setup, exact):
    model, _, task = setup
    clean = statement(11, lines=3)
    corrupted = _flip_first_sign(clean)
    result = activation_patching(model, task, clean, corrupted)
    assert len(result.differing_positions) == 1
    position = result.differing_positions[0]
    # recovered = (patched - corrupted) / (clean - corrupted): a logit difference off by `exact`
    # moves it by exact / |clean - corrupted|
    tolerance = exact / abs(result.clean_logit_diff - result.corrupted_logit_diff)
    # layer 0's input is the embedding: only the differing token can matter, and it restores everything
    assert abs(result.recovered[0, position] - 1.0) < tolerance
    others = np.delete(result.recovered[0], position)
    assert np.abs(others).max() < tolerance
    # positions before the change cannot carry it at any depth
    assert np.abs(result.recovered[:, :position]).max() < tolerance
    frame = result.frame()
    assert set(frame.columns) == {"layer", "position", "patched_logit_diff", "recovered", "token"}
    assert frame.token.iloc[position].strip() in "+-"


def test_patching_every_position_at_once_restores_the_clean_run_at_every_layer(setup, exact):
    model, _, task = setup
    clean = statement(15, lines=3)
    corrupted = _flip_first_sign(clean)
    n = task.encode(clean)["input_ids"].shape[1]
    result = activation_patching(model, task, clean, corrupted,
                                 position_groups={"everything": list(range(n)), "first half": list(range(n // 2))})
    assert result.columns == ["everything", "first half"]
    tolerance = exact / abs(result.clean_logit_diff - result.corrupted_logit_diff)
    assert np.abs(result.recovered[:, 0] - 1.0).max() < tolerance
    assert not np.allclose(result.recovered[1:, 1], 1.0, atol=1e-3)  # half the stream is not the whole story
    assert set(result.frame()["group"]) == {"everything", "first half"}
    with pytest.raises(InputError, match="outside"):
        activation_patching(model, task, clean, corrupted, position_groups={"bad": [n + 3]})


def test_head_patching_equals_a_full_forward_with_the_clean_head_output(setup, exact):
    model, _, task = setup
    clean = statement(12, lines=3)
    corrupted = _flip_first_sign(clean)
    result = activation_patching(model, task, (clean, corrupted), over="heads")
    assert result.recovered.shape == (3, 4)
    layer, head = 1, 2
    with InterventionSet([HeadIntervention(layer, head, "resample")]).applied(model, source=task.encode(clean)):
        full = float(full_forward_logit_diff(model, task, task.encode(corrupted))[0])
    assert abs(result.patched_logit_diff[layer, head] - full) < exact
    assert abs(result.clean_logit_diff - float(CachedRun(model, task, clean).clean_logit_diff[0])) < exact


def test_patching_refuses_statements_of_different_token_length(setup):
    model, _, task = setup
    with pytest.raises(InputError, match="same token length"):
        activation_patching(model, task, statement(13, lines=2), statement(14, lines=3))
    with pytest.raises(InputError, match="residual' or 'heads"):
        activation_patching(model, task, statement(13), statement(13), over="neurons")
