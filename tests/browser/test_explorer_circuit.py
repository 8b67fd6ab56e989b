"""The explorer's circuit view in real JupyterLab 4 with headless Chromium, on the demo model.

An explorer with ``views=["prediction", "grid", "circuit"]`` finds the statement's circuit
(``finwidget.circuits.find_circuit``, first-order) and draws it; a click on a head node
focuses that head in the grid (and in Python); shift-click on a node ablates the head with
the grid's own action, so the prediction is exactly what shift-clicking the grid cell gives.

Screenshots: ``test-artifacts/browser/<test>/`` (``circuit-view.png`` is the view alone).
"""

from __future__ import annotations

import re

import pytest
from browser_harness import NotebookDriver, write_notebook
from explorer_page import ExplorerPage
from test_explorer_e2e import kernel_value
from test_explorer_readable import AXE_JS, _axe

VIEWS = ("circuit-view", "head-grid", "prediction-panel")
NOTEBOOK_CELLS = [
    "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()",
    (
        "from finwidget.demo import make_statements\n"
        "from finwidget.widgets import AttentionExplorer\n"
        "explorer = AttentionExplorer(model, tokenizer, make_statements(1, seed=3)[0].text,\n"
        "                             views=['prediction', 'grid', 'circuit'])\n"
        "explorer"
    ),
]


@pytest.fixture
def lab_dir(lab_server, request):
    """A fresh folder under JupyterLab's root for this test: (server, path, relative name)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)
    folder = lab_server.root_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    return lab_server, folder, name


def circuit_nodes(explorer: ExplorerPage) -> list[dict]:
    return explorer._js(
        """return [...root.querySelectorAll('[data-testid=circuit-node][data-kind=head]')].map(g => ({
             layer: +g.dataset.layer, head: +g.dataset.head, effect: +g.dataset.effect,
             focused: g.getAttribute('data-focused') === '1', ablated: g.getAttribute('data-ablated') === '1'}));"""
    )


def node(explorer: ExplorerPage, layer: int, head: int):
    return explorer.root.locator(f'[data-testid=circuit-node][data-layer="{layer}"][data-head="{head}"]')


def wait_prediction_settled(explorer: ExplorerPage, layer: int, head: int, ablated: bool) -> None:
    explorer._wait(
        """const cell = root.querySelector(`[data-testid=head-cell][data-layer="${arg[0]}"][data-head="${arg[1]}"]`);
           const panel = root.querySelector('[data-testid=prediction-panel]');
           return (cell.getAttribute('data-ablated') === '1') === arg[2]
                  && root.getAttribute('data-finwidget-busy') !== '1' && panel.getAttribute('data-pending') !== '1';""",
        arg=[layer, head, ablated],
        timeout_s=60,
    )


def test_circuit_view_focuses_and_ablates_like_the_grid(lab_dir, page, artifacts):
    server, folder, name = lab_dir
    page, watch = page
    write_notebook(folder / "circuit.ipynb", NOTEBOOK_CELLS)
    driver = NotebookDriver(page, server)
    driver.open(f"{name}/circuit.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = ExplorerPage(page, views=VIEWS)
    driver.wait_until(explorer.is_ready, timeout=300, what="the explorer's first draw with its circuit")
    driver.wait_all_executed()
    assert driver.cell_errors() == []

    # 1. the circuit is drawn: labelled columns, head nodes, the method and faithfulness written
    view = explorer.root.locator("[data-testid=circuit-view]")
    assert view.get_attribute("data-drawn") == "1", explorer.root.locator("[data-testid=circuit-message]").text_content()
    columns = [c.text_content() for c in view.locator("[data-testid=circuit-column]").all()]
    assert columns[0] == "line items" and columns[-1] == "answer" and "L0" in columns, columns
    nodes = circuit_nodes(explorer)
    assert nodes, "the circuit view shows no head"
    assert view.locator("[data-testid=circuit-edge]").count() > 0
    summary = view.locator("[data-testid=circuit-summary]").text_content()
    assert "first-order estimate" in summary and "Faithfulness" in summary, summary
    view.scroll_into_view_if_needed()
    artifacts.shot(view, "circuit-view")
    artifacts.shot(page, "circuit-in-notebook")
    assert AXE_JS.exists(), f"{AXE_JS} missing: run `npm install` (axe-core is a devDependency)"
    violations = _axe(page, explorer)
    artifacts.write("axe.txt", repr(violations))
    assert violations == [], violations

    # 2. clicking a head node focuses that head in the grid and in Python
    top = max(nodes, key=lambda n: abs(n["effect"]))
    other = next((n for n in nodes if (n["layer"], n["head"]) != (top["layer"], top["head"])), top)
    node(explorer, other["layer"], other["head"]).click()
    explorer._wait(
        """const c = root.querySelector(`[data-testid=head-cell][data-layer="${arg[0]}"][data-head="${arg[1]}"]`);
           return c.getAttribute('data-focused') === '1';""",
        arg=[other["layer"], other["head"]],
    )
    assert kernel_value(driver, "explorer.focus") == {"layer": other["layer"], "head": other["head"]}
    assert [n for n in circuit_nodes(explorer) if n["focused"]] == [{**other, "focused": True}]

    # 3. shift-click on the strongest head ablates it: the grid marks it and the prediction changes
    clean = explorer.prediction()
    node(explorer, top["layer"], top["head"]).click(modifiers=["Shift"])
    wait_prediction_settled(explorer, top["layer"], top["head"], ablated=True)
    by_circuit = explorer.prediction()
    assert by_circuit["ablated"] == [[top["layer"], top["head"], "zero"]]
    assert by_circuit["value"] != clean["value"]
    assert [n for n in circuit_nodes(explorer) if n["ablated"]] == [
        {**top, "ablated": True, "focused": top == other}
    ]
    python = kernel_value(driver, "explorer.ablations")
    assert [[a["layer"], a["head"], a["mode"]] for a in python] == [[top["layer"], top["head"], "zero"]]
    artifacts.shot(view, "circuit-node-ablated")

    # 4. the same head ablated from the grid gives exactly the same prediction (one action)
    node(explorer, top["layer"], top["head"]).click(modifiers=["Shift"])
    wait_prediction_settled(explorer, top["layer"], top["head"], ablated=False)
    assert explorer.prediction()["value"] == clean["value"]
    explorer.toggle_ablation(top["layer"], top["head"], ablated_after=True)
    assert explorer.prediction()["value"] == by_circuit["value"]

    # 5. "Exact (path patching)" redraws the graph with measured edges and says so
    view.locator("[data-testid=circuit-exact]").click()
    explorer._wait(
        "const v = root.querySelector('[data-testid=circuit-view]');"
        " return v.getAttribute('data-method') === 'path_patching' && root.getAttribute('data-finwidget-busy') !== '1';",
        timeout_s=120,
    )
    assert "exact path patching" in view.locator("[data-testid=circuit-summary]").text_content()
    assert view.locator("[data-testid=circuit-edge]").count() > 0
    artifacts.shot(view, "circuit-exact")

    # 6. the dark theme: the view is redrawn in its colours and still passes axe
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.getAttribute('data-jp-theme-light') === 'false'", timeout=30000)
    explorer._wait(
        "const v = root.querySelector('[data-testid=circuit-view]');"
        " const t = v && v.querySelector('[data-testid=circuit-column]');"
        " return !!t && t.getAttribute('fill') === '#dddddd';",
        timeout_s=30,
    )
    view.scroll_into_view_if_needed()
    artifacts.shot(view, "circuit-dark")
    violations = _axe(page, explorer)
    artifacts.write("axe-dark.txt", repr(violations))
    # back to the light theme (the server is shared with the next tests) before judging
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_function("() => document.body.getAttribute('data-jp-theme-light') === 'true'", timeout=30000)
    assert violations == [], violations
    assert watch.problems_since(loaded) == [], watch.summary()
