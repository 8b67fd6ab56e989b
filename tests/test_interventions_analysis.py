"""Attribution patching, attention gradients and activation patching, checked against
independent computations (finite changes, transformers' eager attention, full forwards)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import full_forward_logit_diff, same_shape_statement, single_thread, statement

from finwidget.errors import InputError, LocationError
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

@pytest.fixture(scope="module")
def setup(tiny_setup):
    model, tokenizer, task = tiny_setup(seed=1, layers=3)
    return model, tokenizer, task


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
        assert np.allclose(other.estimated_change, zero.estimated_change, atol=1e-6)
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


def test_attention_gradients_equal_autograd_through_transformers_eager_attention(setup):
    model, _, task = setup
    texts = [statement(8, lines=2), statement(9, lines=3)]
    ours = attention_gradients(model, texts, task=task)
    batch = task.encode(texts)
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.enable_grad():
            out = model(**batch, output_attentions=True, use_cache=False)
            objective = task.logit_diff(out.logits[:, -1, :])
            reference = torch.autograd.grad(objective.sum(), out.attentions)
    finally:
        model.set_attn_implementation(original)
    real_rows = batch["attention_mask"].bool()
    for layer, expected in enumerate(reference):
        got = ours.gradients[f"layer_{layer}"]
        assert got.shape == expected.shape
        for row in range(len(texts)):  # padding query rows are discarded by the model: compare real rows
            keep = real_rows[row]
            scale = expected[row][:, keep][:, :, keep].abs().max()
            diff = (got[row][:, keep][:, :, keep] - expected[row][:, keep][:, :, keep]).abs().max()
            assert diff <= 1e-4 * scale + 1e-7, (layer, row, float(diff), float(scale))
        assert torch.allclose(ours.attention[f"layer_{layer}"][:, :, -1], out.attentions[layer][:, :, -1].float(),
                              atol=1e-5)
    assert torch.allclose(ours.objective, objective.detach().float())
    scores = ours.head_scores(query=-1)
    assert len(scores) == 3 * 4 and scores.mean_abs_gradient.gt(0).any()


def test_attention_gradients_for_one_token_logit_like_the_guide(setup):
    model, _tokenizer, task = setup
    ids = task.encode(statement(10))["input_ids"]
    target = task.answer_token_ids[0]
    result = attention_gradients(model, ids, target_logit=target, layers=[2])
    assert list(result.gradients) == ["layer_2"]
    with torch.inference_mode():
        assert abs(float(model(input_ids=ids).logits[0, -1, target]) - float(result.objective[0])) < 1e-5
    with pytest.raises(InputError, match="token id"):
        attention_gradients(model, ids, target_logit=10**9)


def test_residual_patching_is_exact_where_it_can_be_checked(setup):
    model, _, task = setup
    clean = statement(11, lines=3)
    corrupted = _flip_first_sign(clean)
    result = activation_patching(model, task, clean, corrupted)
    assert len(result.differing_positions) == 1
    position = result.differing_positions[0]
    # layer 0's input is the embedding: only the differing token can matter, and it restores everything
    assert abs(result.recovered[0, position] - 1.0) < 1e-4
    others = np.delete(result.recovered[0], position)
    assert np.abs(others).max() < 1e-4
    # positions before the change cannot carry it at any depth
    assert np.abs(result.recovered[:, :position]).max() < 1e-4
    frame = result.frame()
    assert set(frame.columns) == {"layer", "position", "patched_logit_diff", "recovered", "token"}
    assert frame.token.iloc[position].strip() in "+-"


def test_patching_every_position_at_once_restores_the_clean_run_at_every_layer(setup):
    model, _, task = setup
    clean = statement(15, lines=3)
    corrupted = _flip_first_sign(clean)
    n = task.encode(clean)["input_ids"].shape[1]
    result = activation_patching(model, task, clean, corrupted,
                                 position_groups={"everything": list(range(n)), "first half": list(range(n // 2))})
    assert result.columns == ["everything", "first half"]
    assert np.abs(result.recovered[:, 0] - 1.0).max() < 1e-4
    assert not np.allclose(result.recovered[1:, 1], 1.0, atol=1e-3)  # half the stream is not the whole story
    assert set(result.frame()["group"]) == {"everything", "first half"}
    with pytest.raises(LocationError, match="out of range"):  # positions outside a statement: LocationError everywhere
        activation_patching(model, task, clean, corrupted, position_groups={"bad": [n + 3]})


def test_head_patching_equals_a_full_forward_with_the_clean_head_output(setup):
    model, _, task = setup
    clean = statement(12, lines=3)
    corrupted = _flip_first_sign(clean)
    result = activation_patching(model, task, (clean, corrupted), over="heads")
    assert result.recovered.shape == (3, 4)
    layer, head = 1, 2
    with InterventionSet([HeadIntervention(layer, head, "resample")]).applied(model, source=task.encode(clean)):
        full = float(full_forward_logit_diff(model, task, task.encode(corrupted))[0])
    assert abs(result.patched_logit_diff[layer, head] - full) < 1e-5
    assert abs(result.clean_logit_diff - float(CachedRun(model, task, clean).clean_logit_diff[0])) < 1e-6


def test_patching_refuses_statements_of_different_token_length(setup):
    model, _, task = setup
    with pytest.raises(InputError, match="same token length"):
        activation_patching(model, task, statement(13, lines=2), statement(14, lines=3))
    with pytest.raises(InputError, match="residual' or 'heads"):
        activation_patching(model, task, statement(13), statement(13), over="neurons")
