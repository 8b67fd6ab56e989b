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
from finwidget.analysis.prediction import prediction_attention, top_spans
from finwidget.analysis.source import TensorAttention, as_attention_source
from finwidget.analysis.specialization import (
    HEAD_TYPES,
    HeadTypeThresholds,
    classify_head,
    head_specialization,
)

__all__ = [
    "HEAD_TYPES",
    "DecisionPathway",
    "FinancialAttentionAnalyzer",
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
    "head_specialization",
    "logit_lens",
    "prediction_attention",
    "quick_attention_analysis",
    "top_spans",
    "trace_attention_flow",
]
