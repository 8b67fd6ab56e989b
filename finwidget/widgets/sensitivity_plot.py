"""A sensitivity curve drawn with bqplot, linked to the explorer.

``plot_sensitivity(curve, explorer=None)`` draws the logit difference against the swept
value (``finwidget.counterfactuals.sensitivity``): a line with a dot per value (green
where the answer is the first label, "increase"; red for the second), the zero line,
each flip point as a dashed vertical rule, and the statement's own value as a grey
vertical rule with a diamond at its logit difference. Clicking a dot calls
``explorer.what_if(counterfactual)`` with that value's edited statement (the explorer
re-runs on it), when an explorer is given. The figure's marks, in order: the zero line,
the curve, the dots (``figure.marks[2]``), then the flip rules and the original value.
"""

from __future__ import annotations

import numpy as np

from finwidget.errors import InputError

INCREASE_COLOR = "#2e7d32"
DECREASE_COLOR = "#c62828"
FLIP_COLOR = "#6a1b9a"
ORIGINAL_COLOR = "#757575"


def plot_sensitivity(curve, explorer=None, title: str | None = None):
    """A ``bqplot.Figure`` of ``curve`` (a ``SensitivityCurve``); see the module docstring.

    explorer: an object with a ``what_if(counterfactual)`` method (an ``AttentionExplorer``);
        clicking the dot of a value calls it with that value's ``CounterfactualStatement``.
    """
    from finwidget.counterfactuals.sensitivity import SensitivityCurve

    if not isinstance(curve, SensitivityCurve):
        raise InputError(f"plot_sensitivity needs a SensitivityCurve (finwidget.sensitivity(...)), "
                         f"got {type(curve).__name__}")
    if explorer is not None and not callable(getattr(explorer, "what_if", None)):
        raise InputError(f"explorer must have a what_if(counterfactual) method (an AttentionExplorer), "
                         f"got {type(explorer).__name__}")
    from bqplot.axes import Axis
    from bqplot.default_tooltip import Tooltip
    from bqplot.figure import Figure
    from bqplot.marks import Lines, Scatter
    from bqplot.scales import LinearScale

    values = np.asarray(curve.values, dtype=np.float64)
    diffs = np.asarray(curve.logit_diff, dtype=np.float64)
    low, high = float(min(diffs.min(), 0.0)), float(max(diffs.max(), 0.0))
    pad = 0.05 * max(high - low, 1e-6)
    x_scale = LinearScale()
    y_scale = LinearScale(min=low - pad, max=high + pad)
    scales = {"x": x_scale, "y": y_scale}
    first, second = curve.labels
    line = Lines(x=values, y=diffs, scales=scales, colors=["#455a64"], stroke_width=1.5)
    dots = Scatter(
        x=values, y=diffs, scales=scales,
        colors=[INCREASE_COLOR if d > 0 else DECREASE_COLOR for d in diffs], default_size=40,
        tooltip=Tooltip(fields=["x", "y"], labels=[_value_label(curve), "logit difference"],
                               formats=[",.6g", ".3f"]),
    )
    zero = Lines(x=[float(values[0]), float(values[-1])], y=[0.0, 0.0], scales=scales,
                        colors=["#9e9e9e"], line_style="dashed", stroke_width=1)
    marks = [zero, line, dots]
    for point in curve.flip_points:
        marks.append(Lines(x=[point.at, point.at], y=[low - pad, high + pad], scales=scales,
                                  colors=[FLIP_COLOR], line_style="dashed", stroke_width=1.5,
                                  labels=[f"flip at {point.at:,.4g}"], display_legend=True))
    if curve.original_value is not None:
        marks.append(Lines(x=[curve.original_value] * 2, y=[low - pad, high + pad], scales=scales,
                                  colors=[ORIGINAL_COLOR], line_style="dotted", stroke_width=1.5,
                                  labels=[f"as written: {curve.original_value:,.6g}"], display_legend=True))
        if curve.original_logit_diff is not None:
            marks.append(Scatter(x=[curve.original_value], y=[curve.original_logit_diff], scales=scales,
                                        marker="diamond", colors=[ORIGINAL_COLOR], default_size=90))
    if explorer is not None:
        def open_in_explorer(_mark, event):
            index = int(event["data"]["index"])
            explorer.what_if(curve.counterfactuals[index])
        dots.on_element_click(open_in_explorer)
    axes = [
        Axis(scale=x_scale, label=_value_label(curve), tick_format=",.4~g"),
        Axis(scale=y_scale, orientation="vertical", side="left",
                    label=f"logit difference ({first} - {second})"),
    ]
    flips = ", ".join(f"{p.at:,.4g}" for p in curve.flip_points) or "none in range"
    figure = Figure(
        marks=marks, axes=axes, title=title or f"{curve.item}: answer vs {curve.quantity} (flip at {flips})",
        legend_location="top-left", fig_margin={"top": 50, "bottom": 60, "left": 70, "right": 30},
        layout={"width": "640px", "height": "380px"},
    )
    return figure


def _value_label(curve) -> str:
    year = f" ({curve.year})" if curve.year is not None else ""
    what = "change" if curve.quantity == "change" else "value"
    return f"{curve.item} {what}{year}, as written"
