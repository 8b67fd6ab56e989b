"""Bad-input catalogue: the analysis API (the analyzer and its tables). Each case names the
finwidget error it must raise and checks the demo model is untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bad_input_common import accepted, refused

from finwidget.analysis import head_specialization, prediction_attention
from finwidget.analysis.analyzer import FinancialAttentionAnalyzer
from finwidget.capture import capture_attention
from finwidget.errors import InputError, LocationError, LocationTypeError


@pytest.fixture(scope="module")
def analyzer(demo, text):
    model, tokenizer, task = demo
    batch = task.encode(text)
    with capture_attention(model) as cap, torch.inference_mode():
        model(**batch)
    return FinancialAttentionAnalyzer(cap, tokenizer, input_ids=batch["input_ids"], task=task)


CASES = [
    ("span matrix layer a float", lambda a, d, t: a.span_attention_matrix(1.0, 0), LocationTypeError),
    ("span matrix head a string", lambda a, d, t: a.span_attention_matrix(0, "0"), LocationTypeError),
    ("span matrix head out of range", lambda a, d, t: a.span_attention_matrix(0, 4), LocationError),
    ("span matrix unknown reduce", lambda a, d, t: a.span_attention_matrix(0, 0, query_reduce="median"), InputError),
    ("prediction position a float", lambda a, d, t: a.prediction_attention(position=1.5), LocationTypeError),
    ("prediction position out of range", lambda a, d, t: a.prediction_attention(position=10**6), LocationError),
    ("prediction top_k negative", lambda a, d, t: a.prediction_attention(top_k=-1), InputError),
    ("prediction top_k zero", lambda a, d, t: a.prediction_attention(top_k=0), InputError),
    ("prediction top_k a float", lambda a, d, t: a.prediction_attention(top_k=2.5), InputError),
    ("prediction layers floats", lambda a, d, t: a.prediction_attention(layers=[0.5]), LocationTypeError),
    ("analyze top_k a float", lambda a, d, t: a.analyze_prediction_attention(top_k=2.5), InputError),
    ("analyze position a float", lambda a, d, t: a.analyze_prediction_attention(position=3.0), LocationTypeError),
    ("prediction token an int", lambda a, d, t: a.prediction_position(5), InputError),
    ("flow position a float", lambda a, d, t: a.attention_flow(position=-1.0), LocationTypeError),
    ("trace position a float", lambda a, d, t: a.trace_attention_flow(target_token_pos=2.0), LocationTypeError),
    ("trace position out of range", lambda a, d, t: a.trace_attention_flow(target_token_pos=10**6), LocationError),
    ("rollout weight NaN", lambda a, d, t: a.attention_rollout(residual_weight=math.nan), InputError),
    ("rollout weight above 1", lambda a, d, t: a.attention_rollout(residual_weight=2.0), InputError),
    ("specialization layer a float", lambda a, d, t: a.head_specialization(layers=[0.5]), LocationTypeError),
    ("specialization layer out of range", lambda a, d, t: a.head_specialization(layers=[7]), LocationError),
    ("financial matrix head a float", lambda a, d, t: a.financial_attention_matrix(0, 0.5), LocationTypeError),
    ("financial matrix head out of range", lambda a, d, t: a.financial_attention_matrix(0, 9), LocationError),
    ("financial matrix layer a string", lambda a, d, t: a.financial_attention_matrix("0"), LocationTypeError),
    ("analyzer batch a float", lambda a, d, t: FinancialAttentionAnalyzer(
        a.source, d[1], input_ids=d[2].encode(t)["input_ids"], batch=0.7), LocationTypeError),
    ("analyzer batch out of range", lambda a, d, t: FinancialAttentionAnalyzer(
        a.source, d[1], input_ids=d[2].encode(t)["input_ids"], batch=3), LocationError),
    ("analyzer default layer a float", lambda a, d, t: FinancialAttentionAnalyzer(
        a.source, d[1], input_ids=d[2].encode(t)["input_ids"], default_layer=1.0), LocationTypeError),
    ("analyzer without tokens", lambda a, d, t: FinancialAttentionAnalyzer(a.source), InputError),
    ("analyzer text of other tokens", lambda a, d, t: FinancialAttentionAnalyzer(a.source, d[1], text="Revenue: 5"),
     InputError),
    ("analyzer of None", lambda a, d, t: FinancialAttentionAnalyzer(None, d[1], text=t), InputError),
    ("analyzer of a string", lambda a, d, t: FinancialAttentionAnalyzer("attention", d[1], text=t), InputError),
    ("from_model layer a float", lambda a, d, t: FinancialAttentionAnalyzer.from_model(d[0], d[1], t, layer_idx=1.0),
     LocationTypeError),
    ("from_model layer out of range", lambda a, d, t: FinancialAttentionAnalyzer.from_model(
        d[0], d[1], t, layer_idx=10**9), LocationError),
    ("from_model empty text", lambda a, d, t: FinancialAttentionAnalyzer.from_model(d[0], d[1], "  "), InputError),
    ("from_model text a number", lambda a, d, t: FinancialAttentionAnalyzer.from_model(d[0], d[1], 5), InputError),
    ("table of a list", lambda a, d, t: head_specialization([1, 2], a.layout), InputError),
    ("prediction table position a bool", lambda a, d, t: prediction_attention(a.source, a.layout, position=True),
     LocationTypeError),
]


@pytest.mark.parametrize("name,call,error", CASES, ids=[c[0] for c in CASES])
def test_bad_analysis_inputs_are_refused(demo, analyzer, text, name, call, error):
    refused(demo[0], error, lambda: call(analyzer, demo, text))


def test_numpy_and_torch_integers_are_accepted_by_the_analyzer(demo, analyzer, text):
    model = demo[0]
    expected = analyzer.span_attention_matrix(1, 2)
    assert np.array_equal(accepted(model, lambda: analyzer.span_attention_matrix(np.int64(1), np.int32(2))), expected)
    assert np.array_equal(analyzer.span_attention_matrix(torch.tensor(1), torch.tensor(2)), expected)
    table = analyzer.prediction_attention(position=np.int64(-1), top_k=np.int64(3))
    assert table.equals(analyzer.prediction_attention(position=-1, top_k=3))
    from_numpy = FinancialAttentionAnalyzer.from_model(model, demo[1], text, layer_idx=np.int64(1))
    assert from_numpy.default_layer == 1
