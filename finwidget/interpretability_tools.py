"""The guide's import path: ``from finwidget.interpretability_tools import ...``.

The user guide imports these names from ``src.interpretability_tools``; here they are
``finwidget.interpretability_tools`` (or the ``finwidget`` top level):

- ``AttentionHook``: context manager recording attention (``hook.attention_weights``);
- ``FinancialAttentionAnalyzer``, ``quick_attention_analysis``: reading it as a statement;
  the guide's plots return the explorer's widgets;
- ``AttentionInterventions``: head ablation/amplification, from ``finwidget.interventions``;
- ``ComparativeAnalyzer``, ``run_interpretability_experiment``: statistics over many
  statements, from ``finwidget.comparative`` (built on ``finwidget.population``).

This module sits above both the analysis and the widget layers: the guide's analyzer
is :class:`finwidget.analysis.FinancialAttentionAnalyzer` (data and bqplot figures)
whose ``plot_attention_heatmap`` / ``plot_financial_attention_flow`` return explorer
widgets (``finwidget.widgets.views``) by default.

Names load on first use, so importing this module does not pull in torch, the
interventions package or the widgets until they are needed.
"""

from functools import lru_cache, wraps
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and linters; at run time the names load on first use
    # (the guide's analyzer is a subclass of this one whose plots return widgets)
    from finwidget.analysis.analyzer import FinancialAttentionAnalyzer, quick_attention_analysis
    from finwidget.analysis.flow import trace_attention_flow
    from finwidget.analysis.specialization import head_specialization
    from finwidget.capture import AttentionHook, capture_attention
    from finwidget.comparative import ComparativeAnalyzer, run_interpretability_experiment
    from finwidget.interventions import AttentionInterventions

_SOURCES = {
    "AttentionHook": "finwidget.capture",
    "capture_attention": "finwidget.capture",
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


@lru_cache(maxsize=1)
def _guide_names() -> dict:
    """The guide's analyzer class and ``quick_attention_analysis`` (built on first use)."""
    from finwidget.analysis import analyzer as analysis

    class FinancialAttentionAnalyzer(analysis.FinancialAttentionAnalyzer):
        __doc__ = analysis.FinancialAttentionAnalyzer.__doc__

        def explorer_view(self, view: str, layer: int, head: int):
            """The explorer widget the guide's plots return: ``"heatmap"`` (one head's
            attention matrix) or ``"flow"`` (the layer flow next to the statement)."""
            from finwidget.widgets.views import flow_view, heatmap_view

            if view == "heatmap":
                return heatmap_view(self, layer, head)
            if view == "flow":
                return flow_view(self, layer)
            return super().explorer_view(view, layer, head)

    FinancialAttentionAnalyzer.__module__ = __name__

    @wraps(analysis.quick_attention_analysis)
    def quick_attention_analysis(*args, **kwargs) -> FinancialAttentionAnalyzer:
        return FinancialAttentionAnalyzer.from_model(*args, **kwargs)

    quick_attention_analysis.__module__ = __name__
    return {"FinancialAttentionAnalyzer": FinancialAttentionAnalyzer,
            "quick_attention_analysis": quick_attention_analysis}


def __getattr__(name: str):
    if name in ("FinancialAttentionAnalyzer", "quick_attention_analysis"):
        value = _guide_names()[name]
        globals()[name] = value
        return value
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'finwidget.interpretability_tools' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
