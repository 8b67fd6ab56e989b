"""Analysis of captured attention and of the model's decision, as pandas tables.

Reads attention through a capture (``finwidget.capture``) and the statement's spans
(``finwidget.statement``); never imports the widget layer.
"""

from finwidget.analysis.analyzer import FinancialAttentionAnalyzer, quick_attention_analysis
from finwidget.analysis.clustering import financial_attention_matrix, financial_clustering
from finwidget.analysis.decision import (
    DecisionPathway,
    decision_pathway,
    head_direct_contributions,
    logit_lens,
)
from finwidget.analysis.flow import attention_flow, attention_rollout, trace_attention_flow
from finwidget.analysis.lens import logit_lens_from_residuals
from finwidget.analysis.metrics import (
    ATTENTION_MEASURES,
    HEAD_MEASURES,
    HeadMeasure,
    head_measure,
    head_metric_table,
    measure_catalogue,
)
from finwidget.analysis.prediction import prediction_attention, top_spans
from finwidget.analysis.source import AttentionSource, TensorAttention, as_attention_source
from finwidget.analysis.specialization import (
    HEAD_TYPES,
    HeadTypeThresholds,
    classify_head,
    head_specialization,
)

__all__ = [
    "ATTENTION_MEASURES",
    "HEAD_MEASURES",
    "HEAD_TYPES",
    "AttentionSource",
    "DecisionPathway",
    "FinancialAttentionAnalyzer",
    "HeadMeasure",
    "HeadTypeThresholds",
    "TensorAttention",
    "as_attention_source",
    "attention_flow",
    "attention_rollout",
    "classify_head",
    "decision_pathway",
    "financial_attention_matrix",
    "financial_clustering",
    "head_direct_contributions",
    "head_measure",
    "head_metric_table",
    "head_specialization",
    "logit_lens",
    "logit_lens_from_residuals",
    "measure_catalogue",
    "prediction_attention",
    "quick_attention_analysis",
    "top_spans",
    "trace_attention_flow",
]
