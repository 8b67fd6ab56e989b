"""Population plots linked to the explorer in JupyterLab: clicking a cell of the effect-size
heat map (a bqplot GridHeatMap) focuses that head in an AttentionExplorer on the page."""

from __future__ import annotations

from browser_harness import NotebookDriver, write_notebook
from explorer_page import ExplorerPage

CELLS = [
    "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()",
    (
        "import ipywidgets\n"
        "from finwidget.demo import make_statements\n"
        "from finwidget.population import measure_statements, compare_groups\n"
        "from finwidget.widgets import AttentionExplorer\n"
        "from finwidget.widgets.population_plots import ComparisonPlots\n"
        "statements = make_statements(12, seed=999)\n"
        "table = measure_statements(model, tokenizer, statements, progress=False)\n"
        "comparison = compare_groups(table, 'label', metrics=['answer_financial'], permutations=0, bootstrap=99)\n"
        "plots = ComparisonPlots(comparison)\n"
        "explorer = AttentionExplorer(model, tokenizer, statements[0].text)\n"
        "plots.link_explorer(explorer)\n"
        "ipywidgets.VBox([plots, explorer])"
    ),
]


def _click_cell(page, layer: int, head: int) -> None:
    """A user's click at the centre of the heat-map cell (whatever is drawn on top takes it)."""
    cell = page.locator(".heatmaprow").nth(layer).locator(".heatmapcell").nth(head)
    cell.wait_for(state="visible", timeout=30_000)
    cell.scroll_into_view_if_needed()
    box = cell.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _focused(explorer: ExplorerPage, layer: int, head: int) -> None:
    explorer._wait(
        "const c = root.querySelector('canvas[data-testid=attention-matrix]');"
        f" return c && c.getAttribute('data-layer') === '{layer}' && c.getAttribute('data-head') === '{head}';",
        timeout_s=30,
    )


def test_heatmap_click_focuses_the_explorer(lab_server, page, artifacts):
    page, watch = page
    folder = lab_server.root_dir / "population_link"
    write_notebook(folder / "link.ipynb", CELLS)
    driver = NotebookDriver(page, lab_server)
    driver.open("population_link/link.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = ExplorerPage(page)
    driver.wait_until(explorer.is_ready, timeout=240, what="the explorer's first draw")
    driver.wait_all_executed(timeout=240)
    _focused(explorer, 0, 0)
    # rows of the heat map are layers (0, 1), cells in a row are heads (0..3)
    _click_cell(page, 1, 2)
    _focused(explorer, 1, 2)
    artifacts.shot(page, "focused-L1H2")
    _click_cell(page, 0, 3)
    _focused(explorer, 0, 3)
    assert watch.page_errors == [], watch.summary()
    assert watch.problems_since(loaded) == [], watch.summary()
