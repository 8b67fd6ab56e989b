"""``head_specialization`` reduces a capture's attention while computing it (one ``q @ k.T``
and one ``exp`` per block of rows, entropy from the scores): its values are the ones the
general path (attention rows, then ``p log p``) gives.

Tolerance: both paths are float32. Each is compared with a float64 computation written
out here from the recorded queries and keys (softmax, then every measure by its
definition); the one-pass path may drift from it at most 4x as far as the general path
measurably does in the same test, plus float32's epsilon per unit of the value.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from finwidget.analysis import specialization

MEASURES = ["self_attention", "sink_attention", "previous_token", "entropy",
            "financial_attention", "number_attention", "year_attention"]


def _float64_reference(capture, layout, batch: int, first: int) -> dict[str, np.ndarray]:
    """``{measure: [L, H]}`` float64, straight from the definitions."""
    n = layout.num_tokens
    masks = specialization._span_masks(layout, n)
    out = {name: np.zeros((capture.num_layers, capture.num_heads)) for name in MEASURES}
    for layer in range(capture.num_layers):
        queries, keys, scaling = capture.recorded_queries_keys(layer, batch)
        q = queries[:, first:first + n].double()
        k = keys[:, first:first + n].double().repeat_interleave(q.shape[0] // keys.shape[0], dim=0)
        scores = scaling * q @ k.transpose(1, 2)
        scores.masked_fill_(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        p = torch.softmax(scores, dim=-1)[:, 1:]                                    # [H, n-1, n]: rows 1..n-1
        rows = torch.arange(1, n)
        out["self_attention"][layer] = p[:, rows - 1, rows].mean(-1).numpy()
        out["previous_token"][layer] = p[:, rows - 1, rows - 1].mean(-1).numpy()
        out["sink_attention"][layer] = p[:, :, 0].mean(-1).numpy()
        entropy = -(torch.special.xlogy(p, p)).sum(-1) / torch.log(rows.double() + 1)
        out["entropy"][layer] = entropy.mean(-1).numpy()
        for name, mask in masks.items():
            out[f"{name}_attention"][layer] = p[:, :, mask].sum(-1).mean(-1).numpy()
    return out


def _as_grid(table, name: str, shape) -> np.ndarray:
    grid = np.full(shape, np.nan)
    grid[table["layer"].to_numpy(), table["head"].to_numpy()] = table[name].to_numpy()
    return grid


@pytest.mark.parametrize("padded", [False, True])
def test_one_pass_values_equal_the_general_paths(demo, padded):
    from finwidget.capture import capture_attention
    from finwidget.demo import make_statements
    from finwidget.statement import read_statement

    model, tokenizer, task = demo
    texts = [s.text for s in make_statements(2, seed=1)]
    texts[1] = texts[1] + "\n" + texts[0]  # longer: row 0 is left-padded in the batch
    batch = task.encode(texts)
    with capture_attention(model) as capture, torch.inference_mode():
        model(**batch)
    row = 0 if padded else 1
    valid = batch["attention_mask"][row].bool()
    assert bool((~valid).any()) == padded
    layout = read_statement(texts[row], tokenizer, input_ids=batch["input_ids"][row][valid].tolist(), task=task)
    first = int(valid.nonzero()[0])

    one_pass = specialization.head_specialization(capture, layout, batch=row)
    with mock.patch.object(specialization, "_plain_softmax_inputs", return_value=None) as general_only:
        general = specialization.head_specialization(capture, layout, batch=row)
    assert general_only.called
    assert one_pass.columns.tolist() == general.columns.tolist()
    reference = _float64_reference(capture, layout, row, first)
    shape = (capture.num_layers, capture.num_heads)
    for name in MEASURES:
        exact = reference[name]
        general_drift = np.abs(_as_grid(general, name, shape) - exact).max()
        one_pass_drift = np.abs(_as_grid(one_pass, name, shape) - exact).max()
        bound = 4 * general_drift + np.finfo(np.float32).eps * max(1.0, np.abs(exact).max())
        assert one_pass_drift <= bound, (name, one_pass_drift, general_drift)
    # what is not a float measure is the same
    for name in ("layer", "head", "kv_head", "financial_share", "number_share", "year_share"):
        assert one_pass[name].equals(general[name]), name
    assert (one_pass["head_type"] == general["head_type"]).all()


def test_the_general_path_is_kept_where_the_capture_cannot_give_scores(demo):
    """A capture of eager's own weights (no recorded queries/keys) takes the general path."""
    from finwidget.capture import capture_attention
    from finwidget.demo import make_statements
    from finwidget.statement import read_statement

    model, tokenizer, task = demo
    text = make_statements(1, seed=2)[0].text
    batch = task.encode(text)
    with capture_attention(model) as capture, torch.inference_mode():
        model(**batch)
    with capture_attention(model, method="output_attentions") as weights, torch.inference_mode():
        model(**batch)
    layout = read_statement(text, tokenizer, input_ids=batch["input_ids"][0].tolist(), task=task)
    assert weights.recorded_queries_keys(0) is None
    with mock.patch.object(specialization, "_layer_sums_from_scores") as one_pass:
        from_tensors = specialization.head_specialization(weights, layout)
    assert not one_pass.called
    from_capture = specialization.head_specialization(capture, layout)
    # eager's own weights vs the recomputation from the recorded q/k: the capture test bound
    np.testing.assert_allclose(from_tensors["entropy"], from_capture["entropy"], atol=1e-5)
