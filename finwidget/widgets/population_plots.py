"""bqplot figures of a population ``Comparison``, composable in ipywidgets layouts.

``ComparisonPlots(comparison)`` is an ``ipywidgets.VBox`` holding four figures, each also
usable alone:

- ``heatmap``: layer x head grid of the effect size (Hedges' g, or the correlation),
  cells with q below ``q`` marked with a dot;
- ``volcano``: effect vs -log10 q, one point per test;
- ``top_heads``: the ``top`` largest effects with their bootstrap confidence intervals;
- ``scatter``: statements, one metric of one head against the logit difference.

Clicking a head (heat map cell, volcano point, top-heads point) selects it: the
scatter switches to that head, ``selected_head`` is set, and a linked
``AttentionExplorer`` (``link_explorer``) gets the head as its ``focus``. Clicking or
brushing statements in the scatter sets ``selected_statements`` (statement ids);
``on_statements`` callbacks receive them (e.g. to open one in an explorer).
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets
import numpy as np
import traitlets
from bqplot import Axis, ColorAxis, ColorScale, Figure, GridHeatMap, LinearScale, Lines, OrdinalScale, Scatter
from bqplot.interacts import BrushSelector

from finwidget.errors import InputError
from finwidget.population.comparison import Comparison, wide

# Titles of these 420-px figures: small enough that the longest fits above the plot.
TITLE_STYLE = {"font-size": "13px"}


def _effect(comparison: Comparison) -> str:
    return comparison.effect_column


class ComparisonPlots(ipywidgets.VBox):
    """The four linked figures of ``comparison`` (see the module docstring).

    Args:
        comparison: a ``Comparison`` with per-head rows (``layer``, ``head``).
        metric: the metric the heat map and scatter show (default: that of the top test).
        q: the q-value below which a heat-map cell is marked.
        top: how many tests the top-heads figure shows.
    """

    selected_head = traitlets.Dict(allow_none=True, default_value=None)
    selected_statements = traitlets.List()

    def __init__(self, comparison: Comparison, metric: str | None = None, q: float = 0.05, top: int = 10, **kwargs):
        if not isinstance(comparison, Comparison):
            raise InputError(f"plot a Comparison, got {type(comparison).__name__}")
        table = comparison.table
        if "head" not in table or bool(table["head"].isna().all()):
            raise InputError("this comparison has no per-head rows (a layer-band test); print its summary instead")
        self.comparison = comparison
        self.effect = _effect(comparison)
        self.metric = metric or str(comparison.top(1)["metric"].iloc[0])
        if self.metric not in set(table["metric"]):
            raise InputError(f"metric {self.metric!r} is not in this comparison; it has {sorted(set(table['metric']))}")
        self.q = float(q)
        self._statement_callbacks: list[Callable] = []
        self._explorers = []
        self.heatmap = self._heatmap()
        self.volcano = self._volcano()
        self.top_heads = self._top_heads(top)
        self.scatter = self._scatter()
        super().__init__([ipywidgets.HBox([self.heatmap, self.volcano]),
                          ipywidgets.HBox([self.top_heads, self.scatter])], **kwargs)

    # ------------------------------------------------------------------ figures
    def _rows(self):
        return self.comparison.table[self.comparison.table["metric"] == self.metric]

    def _heatmap(self) -> Figure:
        rows = self._rows()
        grid = rows.pivot(index="layer", columns="head", values=self.effect).sort_index().sort_index(axis=1)
        self._layers, self._heads = grid.index.tolist(), grid.columns.tolist()
        values = grid.to_numpy(dtype=float)
        bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        x, y = OrdinalScale(), OrdinalScale(reverse=True)
        color = ColorScale(scheme="RdBu", min=-bound, max=bound, mid=0.0)
        self._grid = GridHeatMap(row=self._layers, column=self._heads, color=np.nan_to_num(values),
                                        scales={"row": y, "column": x, "color": color},
                                        interactions={"click": "select"}, selected_style={"stroke": "black"})
        marked = rows[rows["q"] < self.q]
        self._marks_significant = Scatter(
            x=marked["head"].tolist(), y=marked["layer"].tolist(), scales={"x": x, "y": y}, marker="circle",
            default_size=24, colors=["black"], tooltip=None)
        axes = [Axis(scale=x, label="head"), Axis(scale=y, side="left", label="layer"),
                ColorAxis(scale=color, label=self.effect, side="right", orientation="vertical")]
        self._grid.observe(self._on_grid_select, "selected")
        # bqplot's GridHeatMap reports a click without the cell, so an invisible square per
        # cell, on top, takes the clicks
        cells = [(layer, head) for layer in self._layers for head in self._heads]
        self._cell_hits = Scatter(
            x=[h for _, h in cells], y=[layer for layer, _ in cells], scales={"x": x, "y": y}, marker="square",
            default_size=2500, opacities=[0.001], interactions={"click": "select"},
            selected_style={"opacity": 0.001}, unselected_style={"opacity": 0.001})
        self._cell_list = cells
        self._cell_hits.observe(self._on_cell_select, "selected")
        return Figure(marks=[self._grid, self._marks_significant, self._cell_hits], axes=axes,
                             title=f"{self.effect} per head (dot: q < {self.q:g})",
                             title_style=TITLE_STYLE,
                             fig_margin={"top": 50, "bottom": 50, "left": 60, "right": 90},
                             layout=ipywidgets.Layout(width="420px", height="320px"))

    def _volcano(self) -> Figure:
        table = self.comparison.table
        effect = table[self.effect].to_numpy(dtype=float)
        minus_log_q = -np.log10(np.clip(table["q"].to_numpy(dtype=float), 1e-300, 1.0))
        x, y = LinearScale(), LinearScale()
        self._volcano_points = Scatter(
            x=np.nan_to_num(effect), y=np.nan_to_num(minus_log_q), scales={"x": x, "y": y},
            colors=["#1f77b4"], default_size=20, interactions={"click": "select"},
            selected_style={"fill": "orange"}, unselected_style={"opacity": 0.6})
        threshold = Lines(x=[float(np.nanmin(effect, initial=0)), float(np.nanmax(effect, initial=0))],
                                 y=[-np.log10(self.q)] * 2, scales={"x": x, "y": y}, line_style="dashed",
                                 colors=["gray"])
        self._volcano_points.observe(self._on_volcano_select, "selected")
        return Figure(marks=[self._volcano_points, threshold], title="volcano: effect vs -log10 q", title_style=TITLE_STYLE,
                             axes=[Axis(scale=x, label=self.effect),
                                   Axis(scale=y, side="left", label="-log10 q")],
                             layout=ipywidgets.Layout(width="420px", height="320px"))

    def _top_heads(self, n: int) -> Figure:
        top = self.comparison.top(n)
        self._top_rows = top
        labels = [f"L{int(layer)}H{int(head)} {metric}"
                  for layer, head, metric in zip(top["layer"], top["head"], top["metric"])]
        y, x = OrdinalScale(domain=labels, reverse=True), LinearScale()
        marks = []
        if "g_low" in top:
            low, high = top["g_low"].to_numpy(dtype=float), top["g_high"].to_numpy(dtype=float)
            keep = np.isfinite(low) & np.isfinite(high)
            if keep.any():
                marks.append(Lines(y=[[lab, lab] for lab, k in zip(labels, keep) if k],
                                          x=[[lo, hi] for lo, hi, k in zip(low, high, keep) if k],
                                          scales={"x": x, "y": y}, colors=["gray"]))
        self._top_points = Scatter(y=labels, x=np.nan_to_num(top[self.effect].to_numpy(dtype=float)),
                                          scales={"x": x, "y": y}, colors=["black"], default_size=30,
                                          interactions={"click": "select"})
        self._top_points.observe(self._on_top_select, "selected")
        marks.append(self._top_points)
        interval = f", {self.comparison.settings.get('confidence', 0.95):.0%} CI" if marks[:-1] else ""
        return Figure(marks=marks, title=f"top {len(top)} by |{self.effect}|{interval}", title_style=TITLE_STYLE,
                             axes=[Axis(scale=y, side="left"),
                                   Axis(scale=x, label=self.effect)],
                             fig_margin={"top": 40, "bottom": 40, "left": 220, "right": 20},
                             layout=ipywidgets.Layout(width="420px", height="320px"))

    def _scatter(self) -> Figure:
        x, y = LinearScale(), LinearScale()
        self._statement_points = Scatter(x=[], y=[], scales={"x": x, "y": y}, default_size=20,
                                                interactions={"click": "select"}, selected_style={"fill": "orange"})
        self._brush = BrushSelector(x_scale=x, y_scale=y, marks=[self._statement_points])
        self._statement_points.observe(self._on_statement_select, "selected")
        self._x_axis = Axis(scale=x, label="logit difference")
        self._y_axis = Axis(scale=y, side="left", label=self.metric)
        figure = Figure(marks=[self._statement_points], axes=[self._x_axis, self._y_axis],
                               interaction=self._brush, title_style=TITLE_STYLE, layout=ipywidgets.Layout(width="420px", height="320px"))
        top = self._rows().pipe(lambda r: Comparison(r, self.comparison.settings)).top(1)
        self._show_head(int(top["layer"].iloc[0]), int(top["head"].iloc[0]), figure)
        return figure

    def _show_head(self, layer: int, head: int, figure: Figure | None = None) -> None:
        figure = figure or self.scatter
        data = self.comparison.data
        if data is None or self.metric not in data or "logit_diff" not in data:
            figure.title = "no statement data kept with this comparison"
            return
        values = wide(data, self.metric)[(layer, head)]
        logit = data.drop_duplicates("statement").set_index("statement")["logit_diff"].reindex(values.index)
        self._scatter_ids = values.index.tolist()
        self._statement_points.selected = None
        self._statement_points.x, self._statement_points.y = logit.to_numpy(float), values.to_numpy(float)
        figure.title = f"statements: L{layer}H{head} {self.metric}"  # x: logit difference (axis label)

    # ------------------------------------------------------------------ linking
    def select_head(self, layer: int, head: int) -> None:
        """Select a head as a click would: scatter, ``selected_head`` and linked explorers follow."""
        self.selected_head = {"layer": int(layer), "head": int(head)}

    @traitlets.observe("selected_head")
    def _head_changed(self, change) -> None:
        value = change["new"]
        if value is None:
            return
        self._show_head(value["layer"], value["head"])
        for explorer in self._explorers:
            explorer.focus = dict(value)

    def link_explorer(self, explorer) -> None:
        """Clicking a head here sets ``explorer.focus`` (its public trait)."""
        if not hasattr(explorer, "focus"):
            raise InputError("link_explorer needs an AttentionExplorer (an object with a focus trait)")
        self._explorers.append(explorer)

    def on_statements(self, callback: Callable[[list[int]], None]) -> None:
        """Call ``callback(statement ids)`` whenever statements are clicked or brushed in the scatter."""
        self._statement_callbacks.append(callback)

    def _on_grid_select(self, change) -> None:
        cells = change["new"]
        if cells is not None and len(cells):
            row, column = (int(v) for v in np.asarray(cells)[-1])
            self.select_head(self._layers[row], self._heads[column])

    def _on_cell_select(self, change) -> None:
        indices = change["new"]
        if indices is not None and len(indices):
            self.select_head(*self._cell_list[int(indices[-1])])

    def _pick_row(self, frame, indices) -> None:
        if indices is not None and len(indices):
            row = frame.iloc[int(indices[-1])]
            if np.isfinite(row["head"]):
                self.select_head(int(row["layer"]), int(row["head"]))

    def _on_volcano_select(self, change) -> None:
        self._pick_row(self.comparison.table, change["new"])

    def _on_top_select(self, change) -> None:
        self._pick_row(self._top_rows, change["new"])

    def _on_statement_select(self, change) -> None:
        indices = change["new"]
        ids = [] if indices is None else [int(self._scatter_ids[int(i)]) for i in indices]
        self.selected_statements = ids
        for callback in self._statement_callbacks:
            callback(ids)


def plot_comparison(comparison: Comparison, **kwargs) -> ComparisonPlots:
    """``ComparisonPlots(comparison, **kwargs)``."""
    return ComparisonPlots(comparison, **kwargs)


# ---------------------------------------------------------------- two models, head by head
def plot_model_comparison(comparison, measure: str | None = None, value: str = "difference",
                          line_measure: str = "line_dependence") -> ipywidgets.VBox:
    """Figures of a ``compare_models`` result (``finwidget.population.model_comparison``).

    - a heat map over model a's layers x heads of one per-head measure's ``value``
      (``"difference"``: mean of b - a over the statements; or ``"hedges_g"``), each cell
      the head of a and its matched head of b, significant cells (by q) marked with a dot;
    - a bar chart of the line-level readout: ``line_measure`` (``"line_dependence"`` or
      ``"line_attention"``) per line item, model a and model b side by side, significant
      line items marked with ``*`` in the axis labels.

    ``measure``: default the per-head measure of the largest significant |Hedges' g|.
    Returns an ``ipywidgets.VBox`` with ``.heatmap`` and ``.lines`` (bqplot Figures).
    """
    from bqplot import Bars

    from finwidget.population.model_comparison import ModelComparison

    if not isinstance(comparison, ModelComparison):
        raise InputError(f"plot a ModelComparison (compare_models), got {type(comparison).__name__}")
    if value not in ("difference", "hedges_g"):
        raise InputError(f"value must be 'difference' or 'hedges_g', got {value!r}")
    table = comparison.table
    head_rows = table.loc[table["level"] == "head"]
    if head_rows.empty:
        raise InputError("this comparison has no per-head rows")
    if measure is None:
        hits = comparison.significant()
        hits = hits.loc[hits["level"] == "head"]
        measure = str((hits if len(hits) else head_rows)["measure"].iloc[0])
    rows = comparison.head_rows(measure)
    name_a, name_b = comparison.names
    grid = rows.pivot(index="layer_a", columns="head_a", values=value).sort_index().sort_index(axis=1)
    layers, heads = [int(x) for x in grid.index], [int(x) for x in grid.columns]
    values = grid.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() and np.nanmax(np.abs(values)) > 0 else 1.0
    x, y = OrdinalScale(), OrdinalScale(reverse=True)
    color = ColorScale(scheme="RdBu", min=-bound, max=bound, mid=0.0)
    cells = GridHeatMap(row=layers, column=heads, color=np.nan_to_num(values),
                        scales={"row": y, "column": x, "color": color})
    marked = rows[rows["significant"]]
    dots = Scatter(x=[int(h) for h in marked["head_a"]], y=[int(la) for la in marked["layer_a"]],
                   scales={"x": x, "y": y}, marker="circle", default_size=24, colors=["black"])
    what = f"{name_b} - {name_a}" if value == "difference" else f"Hedges' g ({name_b} - {name_a})"
    heatmap = Figure(marks=[cells, dots], title=f"{measure}: {what} (dot: q < {comparison.settings['alpha']:g})",
                     title_style=TITLE_STYLE,
                     axes=[Axis(scale=x, label=f"head ({name_a})"),
                           Axis(scale=y, side="left", label=f"layer ({name_a})"),
                           ColorAxis(scale=color, label=value, side="right", orientation="vertical")],
                     fig_margin={"top": 50, "bottom": 50, "left": 60, "right": 90},
                     layout=ipywidgets.Layout(width="480px", height="320px"))
    figures = [heatmap]
    lines = comparison.lines(line_measure) if line_measure in set(table.loc[table["level"] == "line", "measure"]) \
        else table.iloc[0:0]
    lines_figure = None
    if len(lines):
        labels = [f"{item}{' *' if sig else ''}" for item, sig in zip(lines["line_item"], lines["significant"])]
        bx, by = OrdinalScale(), LinearScale()
        bars = Bars(x=labels, y=[lines["mean_a"].to_numpy(dtype=float), lines["mean_b"].to_numpy(dtype=float)],
                    scales={"x": bx, "y": by}, type="grouped", colors=["#9e9e9e", "#d62728"],
                    labels=[name_a, name_b], display_legend=True)
        lines_figure = Figure(marks=[bars], title=f"{line_measure} per line item (*: q < "
                                                  f"{comparison.settings['alpha']:g})", title_style=TITLE_STYLE,
                              axes=[Axis(scale=bx, tick_rotate=-30), Axis(scale=by, side="left",
                                                                          label=line_measure)],
                              fig_margin={"top": 50, "bottom": 90, "left": 60, "right": 20},
                              layout=ipywidgets.Layout(width="480px", height="320px"))
        figures.append(lines_figure)
    box = ipywidgets.VBox([ipywidgets.HBox(figures)])
    box.heatmap, box.lines = heatmap, lines_figure  # type: ignore[attr-defined]
    return box
