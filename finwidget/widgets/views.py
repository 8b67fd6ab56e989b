"""The explorer's views used alone, and the widgets the guide's plotting methods return.

Each class is an :class:`~finwidget.widgets.explorer.AttentionExplorer` showing a subset
of the views, with the same traits, messages and Python API (so a ``HeadGrid`` can be
linked to an ``AttentionMatrix`` with ``ipywidgets.link((grid, "focus"), (matrix, "focus"))``).
"""

from __future__ import annotations

from finwidget.errors import InputError
from finwidget.widgets.explorer import AttentionExplorer
from finwidget.widgets.session import ExplorerSession, RecordedSession


class _SingleView(AttentionExplorer):
    VIEWS: tuple[str, ...] = ()

    def __init__(self, model, tokenizer, text, task=None, **kwargs):
        kwargs.setdefault("views", list(self.VIEWS))
        super().__init__(model, tokenizer, text, task, **kwargs)


class StatementView(_SingleView):
    """The statement coloured by attention from / to the selection."""

    VIEWS = ("statement",)


class HeadGrid(_SingleView):
    """The layer x head grid (click focuses, shift-click ablates), with the prediction."""

    VIEWS = ("grid", "prediction")


class AttentionMatrix(_SingleView):
    """The focused head's attention matrix (canvas, zoom and pan)."""

    VIEWS = ("matrix",)


class LayerFlow(_SingleView):
    """The layer flow of the selection with the logit lens, next to the statement."""

    VIEWS = ("statement", "flow")


class PredictionPanel(_SingleView):
    """The prediction, clean vs ablated, with the ablated heads."""

    VIEWS = ("prediction",)


def _session_of(source) -> ExplorerSession:
    """An explorer session from an analyzer (``FinancialAttentionAnalyzer``) or a session."""
    if isinstance(source, ExplorerSession):
        return source
    if hasattr(source, "source") and hasattr(source, "layout"):
        if getattr(source, "batch", 0) != 0:
            raise InputError("the widgets show batch row 0; build the analyzer for that statement alone")
        return RecordedSession(
            source.source, source.layout, prediction=getattr(source, "prediction", None)
        )
    raise InputError(
        f"expected a FinancialAttentionAnalyzer or an ExplorerSession, got {type(source).__name__}"
    )


def heatmap_view(source, layer: int, head: int = 0) -> AttentionMatrix:
    """What ``FinancialAttentionAnalyzer.plot_attention_heatmap(layer, head)`` can return:
    the attention matrix of one head (canvas, zoom and pan, span / line-item aggregation).

    ``source``: the analyzer itself, or an :class:`~finwidget.widgets.session.ExplorerSession`.
    """
    session = _session_of(source)
    return AttentionMatrix.for_session(session, focus=(layer, head))


def flow_view(source, layer: int = 0) -> LayerFlow:
    """What ``FinancialAttentionAnalyzer.plot_financial_attention_flow(layer)`` can return: the
    layer flow (where the selection's attention goes, layer by layer) next to the statement,
    coloured by the mean attention of ``layer``'s heads."""
    session = _session_of(source)
    widget = LayerFlow.for_session(session, focus=(layer, 0))
    widget.settings = {**widget.settings, "statement_heads": "layer"}
    return widget
