"""Jupyter widgets of finwidget: the attention explorer and its views used alone.

``AttentionExplorer(model, tokenizer, text)`` shows the statement, the layer x head
grid, the focused head's attention matrix, the layer flow and the prediction, linked;
``StatementView``, ``HeadGrid``, ``AttentionMatrix``, ``LayerFlow`` and
``PredictionPanel`` are the same widget showing one view.
"""

from finwidget.widgets.explorer import AttentionExplorer
from finwidget.widgets.views import (
    AttentionMatrix,
    HeadGrid,
    LayerFlow,
    PredictionPanel,
    StatementView,
    flow_view,
    heatmap_view,
)

__all__ = [
    "AttentionExplorer",
    "AttentionMatrix",
    "HeadGrid",
    "LayerFlow",
    "PredictionPanel",
    "StatementView",
    "flow_view",
    "heatmap_view",
]
