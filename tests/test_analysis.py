"""Per-head metrics, prediction attention, clustering, flow and rollout, checked against
plain reference computations on the eager path's ``output_attentions``.

The metrics come from the capture (SDPA's run), the references from a separate eager run:
two float32 paths. Their tolerance is measured in the setup: ``row_tolerance`` bounds any
sum over part of one attention row (2 x eager's float32-vs-float64 L1 row drift, see
reference_drift.py); a metric that is not such a sum (entropy) adds twice its own measured
float32-vs-float64 drift.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import eager_attentions
from reference_drift import eager_float64_attentions, row_sum_tolerance

from finwidget.analysis import (
    HeadTypeThresholds,
    TensorAttention,
    attention_flow,
    attention_rollout,
    financial_clustering,
    head_specialization,
    prediction_attention,
    top_spans,
    trace_attention_flow,
)
from finwidget.analysis.clustering import category_attention, span_group
from finwidget.capture import capture_attention
from finwidget.errors import InputError, LocationError
from finwidget.statement import read_statement
from finwidget.task import EarningsTask

STATEMENTS = [
    (
        "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370\n"
        "Operating cash flow: change +2,210 | 2022: 9,876 | 2021: 7,666\n"
        "Total assets: change 120 | 2022: 45,000 | 2021: 44,880\n"
        "Question: Will earnings increase or decrease next year?"
    ),
    (
        "Revenue: change 5,012 | 2022: 120,456 | 2021: 115,444\n"
        "Question: Will earnings increase or decrease next year?"
    ),
]


@pytest.fixture(scope="module")
def setup(analysis_qwen2, qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    task = EarningsTask(tokenizer)
    model = analysis_qwen2(len(tokenizer))
    batch = task.encode(STATEMENTS)
    with capture_attention(model) as cap, torch.no_grad():
        model(**batch)
    eager = eager_attentions(model, batch)
    exact = eager_float64_attentions(model, batch)
    layouts = [read_statement(text, tokenizer, task=task) for text in STATEMENTS]
    return {"tokenizer": tokenizer, "task": task, "model": model, "batch": batch, "cap": cap, "eager": eager,
            "exact": exact, "layouts": layouts, "row_tolerance": row_sum_tolerance(model, batch, eager, exact)}


def valid_block(eager, layer, batch_row, mask):
    """``[H, n, n]`` eager attention of one row over its real tokens."""
    cols = torch.nonzero(mask[batch_row]).flatten()
    return eager[layer][batch_row][:, cols][:, :, cols].double()


def reference_head_metrics(A: torch.Tensor, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Plain loops over query rows 1..n-1 of one head's [n, n] matrix."""
    n = A.shape[0]
    rows = range(1, n)
    out = {
        "self_attention": np.mean([float(A[i, i]) for i in rows]),
        "sink_attention": np.mean([float(A[i, 0]) for i in rows]),
        "previous_token": np.mean([float(A[i, i - 1]) for i in rows]),
        "entropy": np.mean([
            float(-(A[i, : i + 1] * torch.log(A[i, : i + 1].clamp_min(1e-30))).sum()) / math.log(i + 1) for i in rows
        ]),
    }
    for name, mask in masks.items():
        out[f"{name}_attention"] = np.mean([float(A[i, torch.from_numpy(mask)].sum()) for i in rows])
        out[f"{name}_share"] = np.mean([mask[: i + 1].mean() for i in rows])
    return out


def layout_masks(layout):
    return {
        "financial": layout.token_mask(layout.financial_spans()),
        "number": layout.token_mask([s for s in layout.spans if s.kind == "number"]),
        "year": layout.token_mask([s for s in layout.spans if s.kind == "year"]),
    }


def test_attention_is_peaky_enough_to_catch_index_bugs(setup):
    # a sanity check on the test model itself: sharp rows, not near-uniform ones
    top = setup["eager"][1][0].max(-1).values[:, 5:]
    assert float(top.mean()) > 0.5


@pytest.mark.parametrize("row", [0, 1])
def test_head_specialization_matches_reference(setup, row):
    layout, cap = setup["layouts"][row], setup["cap"]
    table = head_specialization(cap, layout, batch=row)
    assert len(table) == cap.num_layers * cap.num_heads
    masks = layout_masks(layout)
    for layer in range(cap.num_layers):
        block = valid_block(setup["eager"], layer, row, setup["batch"]["attention_mask"])
        exact = valid_block(setup["exact"], layer, row, setup["batch"]["attention_mask"])
        for head in range(cap.num_heads):
            got = table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]
            want = reference_head_metrics(block[head], masks)
            want_exact = reference_head_metrics(exact[head], masks)
            for column, value in want.items():
                tolerance = setup["row_tolerance"] + 2 * abs(value - want_exact[column])
                assert got[column] == pytest.approx(value, abs=tolerance), (layer, head, column)
            assert got["financial_lift"] == pytest.approx(got["financial_attention"] / got["financial_share"])
            assert got["kv_head"] == head // (cap.num_heads // cap.num_kv_heads)


def test_chunking_does_not_change_results(setup):
    layout, cap = setup["layouts"][0], setup["cap"]
    whole = head_specialization(cap, layout)
    one_row_at_a_time = head_specialization(cap, layout, max_bytes=1)
    numeric = whole.select_dtypes("number").columns
    np.testing.assert_allclose(whole[numeric].to_numpy(), one_row_at_a_time[numeric].to_numpy(), rtol=1e-5, atol=1e-6)
    assert (whole["head_type"] == one_row_at_a_time["head_type"]).all()
    clustered = financial_clustering(cap, layout)
    clustered_small = financial_clustering(cap, layout, max_bytes=1)
    np.testing.assert_allclose(clustered["financial_to_financial"], clustered_small["financial_to_financial"], atol=1e-6)


def test_eager_tuple_and_capture_give_the_same_tables(setup):
    layout, cap = setup["layouts"][1], setup["cap"]
    mask = setup["batch"]["attention_mask"]
    from_eager = TensorAttention(dict(enumerate(setup["eager"])), attention_mask=mask)
    from_exact = TensorAttention({i: a.float() for i, a in enumerate(setup["exact"])}, attention_mask=mask)
    a = head_specialization(cap, layout, batch=1).drop(columns=["kv_head"])
    b = head_specialization(from_eager, layout, batch=1).drop(columns=["kv_head"])
    c = head_specialization(from_exact, layout, batch=1).drop(columns=["kv_head"])
    numeric = [column for column in a.select_dtypes("number").columns if column != "financial_lift"]
    # per column: the row-sum bound plus twice eager's own float32 drift on that metric
    tolerance = setup["row_tolerance"] + 2 * np.abs(b[numeric].to_numpy() - c[numeric].to_numpy()).max(axis=0)
    assert (np.abs(a[numeric].to_numpy() - b[numeric].to_numpy()) <= tolerance).all()
    # lift = attention / share, the share exact: its error is the attention's over the share
    lift_tolerance = setup["row_tolerance"] / b["financial_share"].to_numpy()
    assert (np.abs(a["financial_lift"].to_numpy() - b["financial_lift"].to_numpy()) <= lift_tolerance).all()


def synthetic_heads(layout) -> torch.Tensor:
    """``[1, 6, n, n]``: self, sink, previous-token, financial, uniform, and a blend."""
    n = layout.num_tokens
    financial = torch.from_numpy(layout.token_mask(layout.financial_spans()))
    causal = torch.tril(torch.ones(n, n))
    heads = torch.zeros(6, n, n)
    heads[0] = torch.eye(n)
    heads[1, :, 0] = 1.0
    heads[2, 0, 0] = 1.0
    heads[2, torch.arange(1, n), torch.arange(n - 1)] = 1.0
    for i in range(n):
        window = torch.zeros(n)
        window[: i + 1] = financial[: i + 1].float()
        heads[3, i] = window / window.sum() if window.sum() > 0 else torch.eye(n)[i]
    heads[4] = causal / causal.sum(-1, keepdim=True)
    heads[5] = 0.35 * heads[0] + 0.35 * heads[2] + 0.3 * heads[4]
    return heads[None]


def test_head_types_follow_the_stated_thresholds(setup):
    layout = setup["layouts"][0]
    source = TensorAttention({0: synthetic_heads(layout)})
    table = head_specialization(source, layout)
    assert list(table["head_type"]) == ["self", "sink", "previous-token", "financial", "diffuse", "mixed"]
    assert table.loc[0, "self_attention"] == pytest.approx(1.0)
    assert table.loc[3, "financial_lift"] > 2.0
    # moving a threshold moves the label
    strict = head_specialization(source, layout, thresholds=HeadTypeThresholds(diffuse_entropy=1.01))
    assert strict.loc[4, "head_type"] == "mixed"


@pytest.mark.parametrize("row", [0, 1])
def test_prediction_attention_sums_span_tokens(setup, row):
    layout, cap = setup["layouts"][row], setup["cap"]
    table = prediction_attention(cap, layout, batch=row)
    assert len(table) == cap.num_layers * cap.num_heads * layout.num_spans
    spans = layout.token_to_span
    for layer in (0, cap.num_layers - 1):
        block = valid_block(setup["eager"], layer, row, setup["batch"]["attention_mask"])
        for head in range(cap.num_heads):
            rows = table[(table["layer"] == layer) & (table["head"] == head)]
            last = block[head, -1]
            for _, r in rows.iterrows():
                want = float(last[torch.from_numpy(spans == r["span"])].sum())
                assert r["attention"] == pytest.approx(want, abs=setup["row_tolerance"])
            assert list(rows["rank"]) == list(range(1, layout.num_spans + 1))
            assert rows["attention"].is_monotonic_decreasing
            # a sum of span sums (float32, one rounding per span) of the same row
            summed = len(rows) * torch.finfo(torch.float32).eps
            assert rows["attention"].sum() == pytest.approx(float(last[torch.from_numpy(spans >= 0)].sum()),
                                                            abs=setup["row_tolerance"] + summed)
    top = prediction_attention(cap, layout, batch=row, top_k=3)
    assert len(top) == cap.num_layers * cap.num_heads * 3
    best = top_spans(table, k=2)
    assert len(best) == 2 * cap.num_layers and set(best.columns) >= {"layer", "text", "attention"}


def test_financial_clustering_matches_reference(setup):
    layout, cap = setup["layouts"][0], setup["cap"]
    table = financial_clustering(cap, layout)
    financial = layout.token_mask(layout.financial_spans())
    queries = [i for i in np.nonzero(financial)[0] if i > 0]
    baseline = np.mean([financial[: i + 1].mean() for i in queries])
    for layer in range(cap.num_layers):
        block = valid_block(setup["eager"], layer, 0, setup["batch"]["attention_mask"])
        for head in range(cap.num_heads):
            got = table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]
            want = np.mean([float(block[head, i, torch.from_numpy(financial)].sum()) for i in queries])
            assert got["financial_to_financial"] == pytest.approx(want, abs=setup["row_tolerance"])
            assert got["uniform_baseline"] == pytest.approx(baseline)
            assert got["lift"] == pytest.approx(want / baseline, abs=setup["row_tolerance"] / baseline)
            assert got["n_query_tokens"] == len(queries)


def test_category_attention_matches_reference(setup):
    layout, cap = setup["layouts"][0], setup["cap"]
    table = category_attention(cap, layout, layer=2)
    block = valid_block(setup["eager"], 2, 0, setup["batch"]["attention_mask"]).mean(0)
    groups = np.array([span_group(layout.spans[s]) if s >= 0 else "" for s in layout.token_to_span])
    for q_group in ("number", "income_statement"):
        q_tokens = [i for i in np.nonzero(groups == q_group)[0] if i > 0]
        for k_group in ("year", "number", "other"):
            k_mask = torch.from_numpy(groups == k_group)
            want = np.mean([float(block[i, k_mask].sum()) for i in q_tokens])
            assert table.loc[q_group, k_group] == pytest.approx(want, abs=setup["row_tolerance"])


def test_attention_flow_is_the_guides_trace(setup):
    cap, mask = setup["cap"], setup["batch"]["attention_mask"]
    position = 7
    flow = trace_attention_flow(cap, position, batch=1)
    assert list(flow) == [f"layer_{i}" for i in range(cap.num_layers)]
    for layer in range(cap.num_layers):
        block = valid_block(setup["eager"], layer, 1, mask)
        np.testing.assert_allclose(flow[f"layer_{layer}"].numpy(), block[:, position, :].mean(0).numpy(),
                                   rtol=0, atol=setup["row_tolerance"])
    by_span = attention_flow(cap, -1, layout=setup["layouts"][1], batch=1)
    n = int(mask[1].sum())
    for layer, group in by_span.groupby("layer"):
        # one float32 row of probabilities summed: under n ulps of 1.0 from 1
        assert group["attention"].sum() == pytest.approx(1.0, abs=n * torch.finfo(torch.float32).eps)
        assert list(group["text"]) == [s.text for s in setup["layouts"][1].spans]


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.9])
def test_rollout_matches_dense_product(setup, weight):
    cap, mask = setup["cap"], setup["batch"]["attention_mask"]
    table = attention_rollout(cap, position=-1, residual_weight=weight, batch=1, max_bytes=4096)
    n = int(mask[1].sum())
    carried = torch.zeros(n, dtype=torch.float64)
    carried[-1] = 1.0
    expected = {}
    for layer in reversed(range(cap.num_layers)):
        mixed = (1 - weight) * valid_block(setup["eager"], layer, 1, mask).mean(0) + weight * torch.eye(n)
        carried = carried @ mixed
        expected[layer] = carried.clone()
    for layer in range(cap.num_layers):
        got = table[table.layer == layer]["attention"].to_numpy()
        # each layer mixes by a row-stochastic matrix, so the layers' row drifts add up
        carried_layers = cap.num_layers - layer
        np.testing.assert_allclose(got, expected[layer].numpy(), rtol=0,
                                   atol=carried_layers * setup["row_tolerance"])
        assert got.sum() == pytest.approx(1.0, abs=carried_layers * n * torch.finfo(torch.float32).eps)
    identity = attention_rollout(cap, position=3, residual_weight=1.0, batch=1)
    assert identity[identity.layer == 0]["attention"].tolist() == [1.0 if k == 3 else 0.0 for k in range(n)]


def test_bad_locations_are_named(setup):
    cap, layout = setup["cap"], setup["layouts"][0]
    with pytest.raises(LocationError, match=r"0\.\.2"):
        head_specialization(cap, layout, layers=[3])
    with pytest.raises(LocationError, match="position 500 is out of range"):
        prediction_attention(cap, layout, position=500)
    with pytest.raises(LocationError, match="batch row 2"):
        head_specialization(cap, layout, batch=2)
    with pytest.raises(InputError, match="real tokens"):
        head_specialization(cap, layout, batch=1)  # the long statement's layout on the short row
    with pytest.raises(InputError, match="residual_weight"):
        attention_rollout(cap, residual_weight=1.5)
    partial = TensorAttention({1: setup["eager"][1]}, num_layers=3)
    with pytest.raises(LocationError, match="not captured"):
        head_specialization(partial, None, layers=[0])
    with pytest.raises(InputError, match="every layer"):
        attention_rollout(partial)
    with pytest.raises(InputError, match="cannot read attention"):
        head_specialization("not attention")


def test_without_layout_span_columns_are_nan(setup):
    table = head_specialization(setup["cap"], None, batch=0, layers=[0])
    assert table["financial_attention"].isna().all()
    assert table["head_type"].isin(["self", "sink", "previous-token", "diffuse", "mixed"]).all()


class SpyAttention(TensorAttention):
    """Records the size of every block of attention the analysis asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.largest_block = 0

    def attention(self, layer, head=None, query=None, batch=0):
        block = super().attention(layer, head, query, batch)
        self.largest_block = max(self.largest_block, block.numel() * 4)
        return block


def test_memory_cap_holds_on_a_long_statement(qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    lines = [f"Revenue: change +{i},{i:03d} | 2022: {i + 10},500 | 2021: {i + 9},100" for i in range(12)]
    layout = read_statement("\n".join(lines), tokenizer)
    n, heads = layout.num_tokens, 4
    assert n > 300
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(2, heads, n, n, generator=generator) * 3
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    attention = scores.softmax(-1)
    cap = 64 * 1024
    assert heads * n * n * 4 > 8 * cap  # one layer would not fit
    spy = SpyAttention({0: attention[:1], 1: attention[1:]})
    reference = TensorAttention({0: attention[:1], 1: attention[1:]})
    for run in (
        lambda source, **kw: head_specialization(source, layout, **kw),
        lambda source, **kw: financial_clustering(source, layout, **kw),
        lambda source, **kw: attention_rollout(source, -1, layout, **kw),
        lambda source, **kw: category_attention(source, layout, 1, **kw),
    ):
        spy.largest_block = 0
        capped = run(spy, max_bytes=cap)
        assert 0 < spy.largest_block <= cap
        uncapped = run(reference)
        numeric_a = capped.select_dtypes("number").to_numpy(dtype=float)
        numeric_b = uncapped.select_dtypes("number").to_numpy(dtype=float)
        np.testing.assert_allclose(numeric_a, numeric_b, rtol=1e-5, atol=1e-6)
