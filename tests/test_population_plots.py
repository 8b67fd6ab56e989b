"""bqplot figures of a Comparison: what they draw, and clicks linked to an explorer's focus."""

from __future__ import annotations

import ipywidgets
import numpy as np
import pytest
from test_population_statistics import metric_table

from finwidget.errors import InputError
from finwidget.population import compare_groups, layer_band
from finwidget.widgets.population_plots import ComparisonPlots


@pytest.fixture(scope="module")
def comparison():
    return compare_groups(metric_table(n=40, effect={(1, 2): 2.0}), "label", metrics=["answer_financial"],
                          permutations=0, bootstrap=199)


def test_figures_compose_and_show_the_comparison(comparison):
    plots = ComparisonPlots(comparison, top=4)
    assert isinstance(plots, ipywidgets.VBox)
    ipywidgets.HBox([plots.heatmap, plots.scatter])  # each figure composes on its own
    grid = np.asarray(plots._grid.color)
    g = comparison.table.set_index(["layer", "head"])["hedges_g"]
    assert grid.shape == (2, 3) and grid[1, 2] == pytest.approx(g.loc[(1, 2)])
    # significant cells are marked, and only those
    marked = set(zip(plots._marks_significant.y.tolist(), plots._marks_significant.x.tolist()))
    assert marked == set(map(tuple, comparison.table.loc[comparison.table["q"] < 0.05, ["layer", "head"]].values))
    assert (1, 2) in marked
    np.testing.assert_allclose(plots._volcano_points.y, -np.log10(comparison.table["q"]))
    assert len(plots._top_points.x) == 4 and len(plots.top_heads.marks) == 2  # points and CI segments
    # the scatter starts on the top head: its metric against the logit difference
    assert plots.scatter.title.startswith("statements: L1H2 answer_financial")
    assert len(plots._statement_points.x) == 40


def test_clicking_a_head_sets_the_explorer_focus_and_statements_report_back(comparison):
    from finwidget import load_demo_model
    from finwidget.demo import make_statements
    from finwidget.widgets import AttentionExplorer

    model, tokenizer = load_demo_model()
    explorer = AttentionExplorer(model, tokenizer, make_statements(1, seed=1)[0].text)
    plots = ComparisonPlots(comparison)
    plots.link_explorer(explorer)
    plots._grid.selected = [[1, 1]]  # what a selection of the cell (layer 1, head 1) sends
    assert explorer.focus == {"layer": 1, "head": 1}
    assert plots.scatter.title.startswith("statements: L1H1")
    plots._cell_hits.selected = [plots._cell_list.index((0, 1))]  # a click on the cell's hit square
    assert explorer.focus == {"layer": 0, "head": 1}
    row = int(np.flatnonzero((comparison.table["layer"] == 0) & (comparison.table["head"] == 2))[0])
    plots._volcano_points.selected = [row]
    assert explorer.focus == {"layer": 0, "head": 2}
    seen = []
    plots.on_statements(seen.append)
    plots._statement_points.selected = [0, 5]  # a click or a brush
    assert seen == [[0, 5]] and plots.selected_statements == [0, 5]


def test_plots_refuse_what_they_cannot_draw():
    with pytest.raises(InputError, match="no per-head rows"):
        ComparisonPlots(layer_band(metric_table(), "financial_lift", min_layer=1, bootstrap=0))
    with pytest.raises(InputError, match="plot a Comparison"):
        ComparisonPlots("nope")
