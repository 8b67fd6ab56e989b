"""FinancialAttentionAnalyzer: built from any captured attention, speaking in spans."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import eager_attentions
from reference_drift import logit_diff_tolerance, row_sum_tolerance

from finwidget.analysis import FinancialAttentionAnalyzer, quick_attention_analysis
from finwidget.capture import AttentionHook, capture_attention
from finwidget.errors import InputError, LocationError
from finwidget.task import EarningsTask

EPS = torch.finfo(torch.float32).eps

STATEMENT = (
    "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370\n"
    "Operating cash flow: change +2,210 | 2022: 9,876 | 2021: 7,666\n"
    "Question: Will earnings increase or decrease next year?"
)


@pytest.fixture(scope="module")
def setup(analysis_qwen2, qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    model = analysis_qwen2(len(tokenizer), seed=2)
    return tokenizer, EarningsTask(tokenizer), model


def test_quick_analysis_reads_spans_and_keeps_the_prediction(setup):
    tokenizer, task, model = setup
    analyzer = quick_attention_analysis(model, tokenizer, STATEMENT, layer_idx=1)
    assert analyzer.default_layer == 1
    batch = task.encode(STATEMENT)
    with torch.no_grad():
        expected = task.logit_diff(model(**batch).logits[:, -1, :])
    # the analyzer's forward (under the capture) vs a plain forward: two float32 paths
    tolerance = float(logit_diff_tolerance(model, task, batch, expected)[0])
    assert analyzer.prediction.logit_diff == pytest.approx(float(expected[0]), abs=tolerance)
    assert analyzer.layout.input_ids == batch["input_ids"][0].tolist()
    names = [s.text for s in analyzer.identify_financial_tokens()]
    assert names[:2] == ["Net income", "Operating cash flow"]

    results = analyzer.analyze_prediction_attention()
    entry = results["layer_2"]
    assert entry["query_position"] == analyzer.layout.num_tokens - 1
    per_head = torch.tensor(entry["financial_attention"]["per_head"])
    assert entry["financial_attention"]["mean"] == pytest.approx(float(per_head.mean()))
    # the same number from the capture directly
    row = analyzer.source.attention(2, head=None, query=-1, batch=0)  # [H, T]
    mask = torch.from_numpy(analyzer.layout.token_mask(analyzer.layout.financial_spans()))
    # same recorded row, summed in another order: n ulps of the row's total (1.0)
    torch.testing.assert_close(per_head, row[:, mask].sum(-1), atol=row.shape[-1] * EPS, rtol=0)
    top_text, _top_value = entry["top_attended_tokens"][0]
    spans = analyzer.layout.token_to_span
    mean_row = row.mean(0)
    best = max(range(analyzer.layout.num_spans), key=lambda k: float(mean_row[torch.from_numpy(spans == k)].sum()))
    assert top_text == analyzer.layout.spans[best].text
    assert entry["top_attended_spans"][0]["span"] == best


def test_built_from_the_guides_hook_during_generation(setup):
    tokenizer, task, model = setup
    batch = task.encode([STATEMENT, "Revenue: change 5 | 2022: 10 | 2021: 5"])
    with AttentionHook(model) as hook:
        output = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    for row in (0, 1):
        analyzer = FinancialAttentionAnalyzer(hook.attention_weights, tokenizer, input_ids=output, batch=row)
        ran = int(hook.capture.attention_mask[row].sum())
        assert analyzer.layout.num_tokens == ran  # prompt + generated tokens the model ran
        results = analyzer.analyze_prediction_attention(prediction_token="increase")
        assert set(results) == {f"layer_{i}" for i in range(model.config.num_hidden_layers)}
        table = analyzer.head_specialization()
        assert len(table) == model.config.num_hidden_layers * model.config.num_attention_heads


def test_prediction_position_follows_a_generated_answer(setup):
    tokenizer, task, model = setup
    text = task.prompt(STATEMENT) + " increase" + "\n"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with capture_attention(model) as cap, torch.no_grad():
        model(input_ids=ids)
    analyzer = FinancialAttentionAnalyzer(cap, tokenizer, text=text, task=task)
    answer_token = next(t for t in range(ids.shape[1]) if analyzer.layout.token_text(t).strip() == "increase"
                        and t > analyzer.layout.num_tokens - 4)
    assert analyzer.prediction_position("increase") == answer_token - 1
    assert analyzer.prediction_position(None) == analyzer.layout.num_tokens - 1
    results = analyzer.analyze_prediction_attention(prediction_token="increase")
    assert results["layer_0"]["query_position"] == answer_token - 1
    assert results["layer_0"]["query_token"].strip() == ":"


def test_built_from_eager_tensors_and_the_statement_text(setup):
    tokenizer, task, model = setup
    batch = task.encode(STATEMENT)
    eager = eager_attentions(model, batch)
    analyzer = FinancialAttentionAnalyzer({f"layer_{i}": a for i, a in enumerate(eager)}, tokenizer, text=STATEMENT)
    assert analyzer.layout.input_ids == batch["input_ids"][0].tolist()
    with capture_attention(model) as cap, torch.no_grad():
        model(**batch)
    captured = FinancialAttentionAnalyzer(cap, tokenizer, text=STATEMENT)
    a = analyzer.compute_financial_attention_scores()
    b = captured.compute_financial_attention_scores()
    # eager's weights vs SDPA's recording: the measured row-sum bound (reference_drift.py)
    np.testing.assert_allclose(a["financial_to_financial"], b["financial_to_financial"], rtol=0,
                               atol=row_sum_tolerance(model, batch, eager))


def test_span_heatmap_and_category_flow_figures(setup):
    import bqplot

    tokenizer, _task, model = setup
    text = STATEMENT.replace("Question", '<script>alert("x")</script> Question')
    analyzer = quick_attention_analysis(model, tokenizer, text)
    figure = analyzer.plot_attention_heatmap(layer_idx=1, head_idx=3, as_figure=True)
    assert isinstance(figure, bqplot.Figure)
    grid = figure.marks[0]
    labels = list(grid.column)
    assert "Net income" in labels and "13,937" in labels and "1" not in labels
    assert any("script" in label for label in labels)  # plain strings; bqplot draws them as SVG text
    matrix = analyzer.span_attention_matrix(1, 3)
    n_tokens = analyzer.layout.num_tokens        # span means of one recorded head: same values, n ulps
    np.testing.assert_allclose(np.asarray(grid.color), matrix, rtol=0, atol=n_tokens * EPS)
    # chunked over query rows, it equals aggregating the whole head at once
    from finwidget.statement import aggregate_to_spans

    whole = analyzer.source.attention(1, head=3, batch=0)
    for reduce in ("mean", "max"):
        expected = aggregate_to_spans(whole, analyzer.layout, reduce).numpy()
        analyzer.max_bytes = 4 * whole.shape[-1] * 3  # three rows per chunk
        np.testing.assert_allclose(analyzer.span_attention_matrix(1, 3, reduce), expected, rtol=0,
                                   atol=n_tokens * EPS)
    analyzer.max_bytes = None
    smaller = analyzer.plot_attention_heatmap(layer_idx=1, head_idx=3, max_spans=10, as_figure=True)
    assert len(smaller.marks[0].column) == 10
    flow = analyzer.plot_financial_attention_flow(layer_idx=0, as_figure=True)
    assert {"income_statement", "cash_flow", "number", "year"} <= set(flow.marks[0].column)


def test_guide_plots_return_the_explorer_views(setup):
    import finwidget
    from finwidget.interpretability_tools import FinancialAttentionAnalyzer as GuideAnalyzer
    from finwidget.interpretability_tools import quick_attention_analysis as guide_quick_analysis
    from finwidget.widgets import AttentionMatrix, LayerFlow

    tokenizer, _task, model = setup
    assert finwidget.quick_attention_analysis is guide_quick_analysis
    analyzer = guide_quick_analysis(model, tokenizer, STATEMENT)
    assert isinstance(analyzer, GuideAnalyzer) and isinstance(analyzer, FinancialAttentionAnalyzer)
    matrix = analyzer.plot_attention_heatmap(layer_idx=1, head_idx=3)
    assert isinstance(matrix, AttentionMatrix)
    assert (matrix.focus["layer"], matrix.focus["head"]) == (1, 3)
    flow = analyzer.plot_financial_attention_flow(layer_idx=1)
    assert isinstance(flow, LayerFlow) and flow.focus["layer"] == 1
    with pytest.raises(LocationError, match=r"0\.\.3"):
        analyzer.plot_attention_heatmap(layer_idx=0, head_idx=4)
    # The analysis layer's own analyzer knows no widgets: it says where they come from.
    data_only = quick_attention_analysis(model, tokenizer, STATEMENT)
    with pytest.raises(InputError, match="interpretability_tools"):
        data_only.plot_attention_heatmap(layer_idx=1, head_idx=3)


def test_half_precision_storage_stays_close(setup):
    tokenizer, _task, model = setup
    full = quick_attention_analysis(model, tokenizer, STATEMENT)
    half = quick_attention_analysis(model, tokenizer, STATEMENT, store_dtype=torch.float16)
    a = full.head_specialization()["previous_token"].to_numpy()
    b = half.head_specialization()["previous_token"].to_numpy()
    # fp16 rounds q and k by 2**-11 relative each: a score moves by at most
    # 2 * 2**-11 * scaling * sum_i |q_i| |k_i|, a softmax probability by at most the largest score
    # change, and a mean of probabilities by no more. Bound from the stored float32 q and k.
    cap = full.source
    group = cap.num_heads // cap.num_kv_heads
    largest = max(
        float(torch.einsum("bhtd,bhsd->bhts", cap.queries(layer).double().abs(),
                           cap.keys(layer).double().abs().repeat_interleave(group, dim=1)).max())
        for layer in range(cap.num_layers))
    bound = largest * cap.head_dim ** -0.5 * (2 * 2.0**-11 + 4 * EPS)
    assert np.abs(a - b).max() <= bound, (np.abs(a - b).max(), bound)


def test_bad_input_is_named(setup):
    tokenizer, _task, model = setup
    analyzer = quick_attention_analysis(model, tokenizer, STATEMENT)
    with pytest.raises(LocationError, match=r"0\.\.3"):
        analyzer.plot_attention_heatmap(layer_idx=0, head_idx=4)
    with pytest.raises(LocationError, match="3 layers"):
        quick_attention_analysis(model, tokenizer, STATEMENT, layer_idx=7)
    with pytest.raises(InputError, match="empty"):
        quick_attention_analysis(model, tokenizer, "  ")
    with pytest.raises(InputError, match="tokenizer"):
        FinancialAttentionAnalyzer(analyzer.source)
    with pytest.raises(InputError, match="does not match"):
        FinancialAttentionAnalyzer(analyzer.source, tokenizer, text="Revenue: 5")
    with pytest.raises(LocationError, match="position"):
        analyzer.analyze_prediction_attention(position=10_000)
