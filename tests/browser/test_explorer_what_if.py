"""What-if in real JupyterLab 4 and Notebook 7 with headless Chromium: double-click a number, type another
value, watch the prediction change next to the original, colour by the difference, undo.

The demo model's planted rule is "increase when net income and operating cash flow both
rose". In the statement of seed 3 both rose (the model says "increase"); setting net
income 2012 to -100 (2011: 151) makes its change negative, so the answer must flip to
"decrease". The numbers the page shows are checked against the kernel's own state.

Screenshots: ``test-artifacts/browser/<test>/`` (``what-if.png`` is the edited state).
"""

from __future__ import annotations

import pytest
from browser_harness import NotebookDriver, output_text, write_notebook
from explorer_page import ExplorerPage

CELLS = [
    "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()",
    (
        "from finwidget.demo import make_statements\n"
        "from finwidget.widgets import AttentionExplorer\n"
        # layer 1 head 0 reads the rule lines at the answer (the demo model's card)
        "explorer = AttentionExplorer(model, tokenizer, make_statements(1, seed=3)[0].text, focus=(1, 0))\n"
        "explorer"
    ),
]

# JS: the number spans of the line whose line item is `arg` (change, current year, previous year)
_LINE_NUMBERS = """
const name = [...root.querySelectorAll('[data-testid=span][data-kind=line_item_name]')]
  .find(s => s.textContent === arg);
const line = name.closest('.fw-line');
return [...line.querySelectorAll('[data-testid=span][data-kind=number]')]
  .map(s => ({index: +s.dataset.spanIndex, text: s.textContent, changed: s.hasAttribute('data-what-if-changed')}));
"""

_PANEL = """
const panel = root.querySelector('[data-testid=what-if-panel]');
const cell = (id) => panel.querySelector(`[data-testid=${id}]`);
return {active: panel.getAttribute('data-active') === '1',
        original: cell('what-if-original').getAttribute('data-label'),
        edited: cell('what-if-edited').getAttribute('data-label'),
        original_value: parseFloat(cell('what-if-original').getAttribute('data-value')),
        edited_value: parseFloat(cell('what-if-edited').getAttribute('data-value')),
        edits: [...panel.querySelectorAll('[data-testid=what-if-edit]')].map(li => li.textContent),
        text: panel.innerText};
"""


def test_what_if_edit_flips_the_demo_prediction_and_undo_restores_it(notebook_dir, page, artifacts):
    server, folder, name = notebook_dir
    page, watch = page
    write_notebook(folder / "what_if.ipynb", CELLS)
    driver = NotebookDriver(page, server)
    driver.open(f"{name}/what_if.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = ExplorerPage(page)
    driver.wait_until(explorer.is_ready, timeout=180, what="the explorer's first draw")
    driver.wait_all_executed()
    explorer.wait_idle()

    numbers = explorer._js(_LINE_NUMBERS, "Net income")
    change, current, previous = numbers
    assert (change["text"], current["text"], previous["text"]) == ("+44", "195", "151")
    original_value = explorer.prediction()["value"]
    original_statement = explorer.statement_text()

    # A word cannot be edited: the view says so and opens nothing.
    explorer.root.locator("[data-testid=span][data-kind=line_item_name]", has_text="Net income").dblclick()
    message = explorer.root.locator("[data-testid=what-if-message]")
    assert "is not a number of the statement" in message.inner_text()
    assert explorer.root.locator("[data-testid=what-if-input]").count() == 0

    # Double-click the current-year value: an editor prefilled with the number as written.
    explorer.span(current["index"]).dblclick()
    editor = explorer.root.locator("[data-testid=what-if-input]")
    editor.wait_for(state="visible", timeout=10_000)
    assert editor.input_value() == "195"
    editor.fill("abc")
    editor.press("Enter")
    error = explorer.root.locator("[data-testid=what-if-error]")
    error.wait_for(state="visible", timeout=10_000)
    assert "“abc” is not a number" in error.inner_text()
    artifacts.shot(explorer.root, "not-a-number")
    assert explorer.root.locator("[data-testid=what-if-panel]").get_attribute("data-active") is None

    editor.fill("-100")
    editor.press("Enter")
    explorer._wait(
        "return root.querySelector('[data-testid=what-if-panel]').getAttribute('data-active') === '1'"
        " && root.getAttribute('data-finwidget-ready') === '1' && root.getAttribute('data-finwidget-busy') !== '1';",
        timeout_s=120,
    )
    panel = explorer._js(_PANEL)
    assert panel["original"] == "increase" and panel["edited"] == "decrease", panel
    assert panel["edits"] == ["Net income 2012: 195 → -100"]
    assert panel["original_value"] == original_value
    # the statement shows the edited text, the change column recomputed, both marked
    numbers = explorer._js(_LINE_NUMBERS, "Net income")
    assert [(n["text"], n["changed"]) for n in numbers] == [("-251", True), ("-100", True), ("151", False)]
    # what the page shows is what the kernel holds
    kernel = output_text(driver.append_and_run(
        "s = explorer.what_if_state\n"
        "print(repr(s['original']['logit_diff']), repr(s['edited']['logit_diff']), s['edited']['label'])"
    )).split()
    assert float(kernel[0]) == pytest.approx(panel["original_value"], rel=1e-6)
    assert float(kernel[1]) == pytest.approx(panel["edited_value"], rel=1e-6)
    assert kernel[2] == "decrease"
    # the prediction panel's main numbers are the edited run's
    assert explorer.prediction()["value"] == pytest.approx(panel["edited_value"], rel=1e-6)

    # Colour by difference: the grid and the statement switch to edited − original.
    explorer.root.locator("[data-testid=what-if-difference]").check()
    explorer._wait(
        "return root.querySelector('[data-testid=head-grid]').getAttribute('data-what-if-difference') === '1'"
        " && root.querySelector('[data-testid=statement-view]').getAttribute('data-what-if-difference') === '1'"
        " && root.getAttribute('data-finwidget-busy') !== '1';",
        timeout_s=60,
    )
    grid_legend = explorer.root.locator("[data-testid=head-grid]").inner_text()
    statement_legend = explorer.root.locator("[data-testid=statement-view]").inner_text()
    assert "edited − original" in grid_legend and "edited − original" in statement_legend
    values = [float(v.split("|")[0]) for v in explorer.grid_values()]
    assert min(values) < 0 < max(values), values  # a signed difference
    # the whole explorer in one picture: a viewport as tall as the widget
    height = int(explorer._js("return root.getBoundingClientRect().height;"))
    page.set_viewport_size({"width": 1500, "height": height + 400})
    explorer.root.scroll_into_view_if_needed()
    shot = artifacts.shot(explorer.root, "what-if")
    assert shot.stat().st_size > 10_000
    page.set_viewport_size({"width": 1500, "height": 1100})

    # Undo: back to the original statement and prediction.
    explorer.root.locator("[data-testid=what-if-undo]").click()
    explorer._wait(
        "return root.querySelector('[data-testid=what-if-panel]').getAttribute('data-active') !== '1'"
        " && root.getAttribute('data-finwidget-ready') === '1' && root.getAttribute('data-finwidget-busy') !== '1';",
        timeout_s=120,
    )
    numbers = explorer._js(_LINE_NUMBERS, "Net income")
    assert [(n["text"], n["changed"]) for n in numbers] == [("+44", False), ("195", False), ("151", False)]
    assert explorer.prediction()["value"] == original_value
    assert explorer.statement_text() == original_statement
    assert output_text(driver.append_and_run("print('edits' in explorer.what_if_state)")).strip() == "False"
    artifacts.shot(explorer.root, "undone")
    assert watch.problems_since(loaded) == [], watch.summary()
