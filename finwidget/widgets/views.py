"""The explorer's views used alone, and the widgets the guide's plotting methods return.

Each class is an :class:`~finwidget.widgets.explorer.AttentionExplorer` showing a subset
of the views, with the same traits, messages and Python API (so a ``HeadGrid`` can be
linked to an ``AttentionMatrix`` with ``ipywidgets.link((grid, "focus"), (matrix, "focus"))``).
"""

from __future__ import annotations

from finwidget.widgets.explorer import AttentionExplorer


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


def heatmap_view(model, tokenizer, text, layer: int, head: int, task=None, session=None) -> AttentionMatrix:
    """What ``FinancialAttentionAnalyzer.plot_attention_heatmap(layer, head)`` returns:
    the attention matrix of one head, next to nothing else, focused on (layer, head).

    Pass ``session`` (an :class:`~finwidget.widgets.session.ExplorerSession`) to reuse a
    run already made; otherwise the statement is run once.
    """
    return AttentionMatrix(model, tokenizer, text, task, focus=(layer, head), session=session)


def flow_view(model, tokenizer, text, layer: int = 0, task=None, session=None) -> LayerFlow:
    """What ``FinancialAttentionAnalyzer.plot_financial_attention_flow(layer)`` returns:
    the layer flow with the statement coloured by the mean attention of ``layer``'s heads."""
    widget = LayerFlow(model, tokenizer, text, task, focus=(layer, 0), session=session)
    widget.settings = {**widget.settings, "statement_heads": "layer"}
    return widget
