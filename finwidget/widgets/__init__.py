"""Jupyter widgets of finwidget: the attention explorer and its views used alone.

``AttentionExplorer(model, tokenizer, text)`` shows, linked:

- the statement as written, spans (words, numbers, line items) coloured by attention
  from (or to) the selection;
- the layer x head grid, query heads grouped by the KV head they read, coloured by a
  measure of ``finwidget.analysis.metrics`` (attention to the selection, entropy, financial
  attention and focus, direct contribution to
  the logit difference, ablation effect after a sweep); click focuses, shift-click ablates;
- the focused head's attention matrix (canvas, zoom and pan, span / line-item aggregation);
- the layer flow: where the selection's attention goes in every layer, with the
  logit-lens logit difference (drag over layers to filter the grid);
- the prediction, clean vs with the ablated heads.

Example::

    from finwidget import load_demo_model
    from finwidget.widgets import AttentionExplorer

    model, tokenizer = load_demo_model()
    explorer = AttentionExplorer(model, tokenizer, statement_text)
    explorer                              # draw it
    explorer.select("Net income")         # the selection every view follows
    explorer.ablate(1, 3)                 # same as shift-clicking L1 H3; -> explorer.prediction
    explorer.save_html("explorer.html")   # standalone page, works offline

``StatementView``, ``HeadGrid``, ``AttentionMatrix``, ``LayerFlow`` and ``PredictionPanel``
are the same widget showing one view; ``AttentionExplorer.from_attention`` shows attention
recorded without the model; ``heatmap_view`` / ``flow_view`` are what the guide's analyzer
plots can return. The message protocol is in :mod:`finwidget.widgets.protocol`.
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
