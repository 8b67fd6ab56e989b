"""The explorer's gestures inside a real notebook page (JupyterLab 4 and Notebook 7).

Shift+click is the explorer's "ablate this head" gesture, and JupyterLab's notebook
also listens for shift+click ("extend the cell selection"). If the notebook sees the
click, the next Shift+Enter runs every selected cell again and silently replaces the
explorer with a fresh one. The explorer must keep its gestures to itself. The second
gesture (the "Ablate mode" toggle, then a plain click) must ablate the same way.
"""

from __future__ import annotations

from browser_harness import NotebookDriver, write_notebook
from explorer_page import ExplorerPage

MODEL_CELL = "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()"


def test_grid_gestures_stay_in_the_widget(notebook_dir, page, artifacts):
    server, folder, name = notebook_dir
    page, watch = page
    write_notebook(
        folder / "gestures.ipynb",
        [
            MODEL_CELL,
            (
                "from finwidget.demo import make_statements\n"
                "from finwidget.widgets import AttentionExplorer\n"
                "explorer = AttentionExplorer(model, tokenizer, make_statements(1, seed=5)[0].text)\n"
                "explorer"
            ),
            "print('a cell after the explorer')",
        ],
    )
    driver = NotebookDriver(page, server)
    driver.open(f"{name}/gestures.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = ExplorerPage(page)
    driver.wait_until(explorer.is_ready, timeout=180, what="the explorer's first draw")
    driver.wait_all_executed()

    # shift+click in the grid ablates the head; shift+click in the statement selects a range.
    # Neither may reach the notebook (whose shift+click extends the cell selection).
    leaks = []
    selected_before = driver.selected_cells()
    explorer.toggle_ablation(0, 0, ablated_after=True)
    if driver.selected_cells() != selected_before:
        leaks.append(f"grid shift+click: cell selection {selected_before} -> {driver.selected_cells()}")
    ablated_by_shift = explorer.prediction()["value"]
    explorer.toggle_ablation(0, 0, ablated_after=False)
    driver.deselect_cells()

    numbers = [s["index"] for s in explorer.spans() if s["kind"] == "number"]
    selected_before = driver.selected_cells()
    explorer.select_span(numbers[0])
    explorer.span(numbers[2]).click(modifiers=["Shift"])
    explorer._wait(
        'return root.querySelector(`[data-testid=span][data-span-index="${arg}"]`)'
        ".getAttribute('data-selected') === '1';",
        arg=numbers[2],
    )
    if driver.selected_cells() != selected_before:
        leaks.append(f"statement shift+click: cell selection {selected_before} -> {driver.selected_cells()}")
    driver.deselect_cells()

    # the other ablation gesture: Ablate mode on, then a plain click
    explorer.root.locator("[data-testid=ablate-mode]").click()
    explorer.cell(0, 0).click()
    explorer._wait(
        'const c = root.querySelector(\'[data-testid=head-cell][data-layer="0"][data-head="0"]\');'
        " return c.getAttribute('data-ablated') === '1' && root.getAttribute('data-finwidget-busy') !== '1'"
        " && root.querySelector('[data-testid=prediction-panel]').getAttribute('data-pending') !== '1';"
    )
    assert explorer.prediction()["value"] == ablated_by_shift
    artifacts.shot(page, "ablate-mode")
    assert watch.problems_since(loaded) == [], watch.summary()
    assert leaks == [], (
        "shift+click inside the explorer reached the notebook and extended its cell selection "
        f"(the next Shift+Enter would re-run those cells and replace the explorer): {leaks}"
    )
