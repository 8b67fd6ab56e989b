"""Drawing analysis results as bqplot figures (until the widget layer takes these over).

Only drawing lives here: every function takes numbers already computed (a matrix and
its labels) and returns a ``bqplot.Figure``. Labels are plain strings given to bqplot,
which renders them as SVG text (never as HTML).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _unique_labels(labels: Sequence[str]) -> list[str]:
    """Ordinal axes need unique labels: repeated texts get their position appended."""
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    out = []
    for i, label in enumerate(labels):
        text = label.replace("\n", "\u23ce") if label.strip() else repr(label)
        out.append(f"{text} [{i}]" if seen[label] > 1 or not label.strip() else text)
    return out


def heatmap_figure(matrix, row_labels: Sequence[str], column_labels: Sequence[str], title: str,
                   x_label: str = "key", y_label: str = "query", color_label: str = "attention"):
    """A ``bqplot.Figure`` with a grid heat map of ``matrix`` ``[rows, columns]``."""
    import bqplot
    from bqplot import Figure  # (pyright reads bqplot.Figure as the module)

    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(row_labels), len(column_labels)):
        raise ValueError(f"matrix shape {values.shape} does not match {len(row_labels)} x {len(column_labels)} labels")
    rows, columns = _unique_labels(row_labels), _unique_labels(column_labels)
    x_scale = bqplot.OrdinalScale(domain=columns)
    y_scale = bqplot.OrdinalScale(domain=rows, reverse=True)
    color_scale = bqplot.ColorScale(scheme="Blues", min=0.0, max=float(max(values.max(initial=0.0), 1e-9)))
    grid = bqplot.GridHeatMap(
        color=values,
        row=rows,
        column=columns,
        scales={"row": y_scale, "column": x_scale, "color": color_scale},
        tooltip=bqplot.Tooltip(fields=["row", "column", "color"], labels=[y_label, x_label, color_label],
                               formats=["", "", ".4f"]),
    )
    axes = [
        bqplot.Axis(scale=x_scale, label=x_label, tick_rotate=-60, tick_style={"font-size": "9px"}),
        bqplot.Axis(scale=y_scale, side="left", label=y_label, tick_style={"font-size": "9px"}),
        bqplot.ColorAxis(scale=color_scale, side="right", label=color_label),
    ]
    size = max(360, min(900, 14 * max(len(rows), len(columns)) + 160))
    return Figure(marks=[grid], axes=axes, title=title,
                         fig_margin={"top": 50, "bottom": 140, "left": 180, "right": 90},
                         layout={"width": f"{size + 180}px", "height": f"{size}px"})


def bar_figure(values: Sequence[float], labels: Sequence[str], title: str, y_label: str = "attention"):
    """A ``bqplot.Figure`` with one bar per label."""
    import bqplot
    from bqplot import Figure, LinearScale  # (pyright reads bqplot.Figure as the module)

    names = _unique_labels(labels)
    x_scale, y_scale = bqplot.OrdinalScale(domain=names), LinearScale(min=0.0)
    bars = bqplot.Bars(x=names, y=np.asarray(values, dtype=np.float64), scales={"x": x_scale, "y": y_scale})
    axes = [bqplot.Axis(scale=x_scale, tick_rotate=-45),
            bqplot.Axis(scale=y_scale, side="left", label=y_label)]
    return Figure(marks=[bars], axes=axes, title=title, fig_margin={"top": 50, "bottom": 120, "left": 60,
                                                                             "right": 20})
