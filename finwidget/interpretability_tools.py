"""The guide's import path: ``from finwidget.interpretability_tools import ...``.

The user guide imports these names from ``src.interpretability_tools``; here they are
``finwidget.interpretability_tools`` (or the ``finwidget`` top level):

- ``AttentionHook``: context manager recording attention (``hook.attention_weights``);
- ``FinancialAttentionAnalyzer``, ``quick_attention_analysis``: reading it as a statement;
- ``AttentionInterventions``: head ablation/amplification, from ``finwidget.interventions``;
- ``ComparativeAnalyzer``, ``run_interpretability_experiment``: statistics over many
  statements, from ``finwidget.comparative`` (built on ``finwidget.population``).

Names load on first use, so importing this module does not pull in torch or the
interventions package until they are needed.
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and linters; at run time the names load on first use
    from finwidget.analysis.analyzer import FinancialAttentionAnalyzer, quick_attention_analysis
    from finwidget.analysis.flow import trace_attention_flow
    from finwidget.analysis.specialization import head_specialization
    from finwidget.capture import AttentionHook, capture_attention
    from finwidget.comparative import ComparativeAnalyzer, run_interpretability_experiment
    from finwidget.interventions import AttentionInterventions

_SOURCES = {
    "AttentionHook": "finwidget.capture",
    "capture_attention": "finwidget.capture",
    "FinancialAttentionAnalyzer": "finwidget.analysis.analyzer",
    "quick_attention_analysis": "finwidget.analysis.analyzer",
    "trace_attention_flow": "finwidget.analysis.flow",
    "head_specialization": "finwidget.analysis.specialization",
    "AttentionInterventions": "finwidget.interventions",
    "ComparativeAnalyzer": "finwidget.comparative",
    "run_interpretability_experiment": "finwidget.comparative",
}

__all__ = [
    "AttentionHook",
    "AttentionInterventions",
    "ComparativeAnalyzer",
    "FinancialAttentionAnalyzer",
    "capture_attention",
    "head_specialization",
    "quick_attention_analysis",
    "run_interpretability_experiment",
    "trace_attention_flow",
]


def __getattr__(name: str):
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'finwidget.interpretability_tools' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
