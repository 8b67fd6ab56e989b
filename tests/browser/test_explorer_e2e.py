"""The explorer end to end, in real JupyterLab 4 and Notebook 7 with headless Chromium.

Opens ``examples/quickstart.ipynb`` (a copy), runs every cell, and then uses the widget
the way a person does: select a number, watch the grid and the matrix follow, ablate
the demo model's most important head and compare the prediction the page shows with
finwidget's Python API computed here in the test process, restore it, export the page
to HTML and open that file with no server and no network.

Screenshots of each step: ``test-artifacts/browser/<test>/``.
"""

from __future__ import annotations

import json
import shutil

import pytest
from browser_harness import REPO_ROOT, NotebookDriver, output_text
from explorer_page import ExplorerPage

QUICKSTART = REPO_ROOT / "examples" / "quickstart.ipynb"
# The demo model has a planted mechanism: its most important head moves the answer a lot.
MIN_TOP_HEAD_EFFECT = 0.5
PLANTED_HEADS = {(0, 1), (0, 2)}


@pytest.fixture(scope="session")
def demo_model():
    from finwidget import load_demo_model

    return load_demo_model()


def python_api_ablation(model, tokenizer, text, layer, head):
    """(clean, ablated, tolerance): logit differences of ``text`` with head (layer, head) zeroed,
    two ways, and the tolerance between two float32 paths to them.

    ``CachedRun.predict`` (the fast path the widget uses) and a plain full forward
    under ``InterventionSet.applied``; the test checks they agree before trusting them.
    The tolerance is measured: twice the full forwards' distance from a float64 copy of the
    model (clean and ablated), plus two ulps of the answer logits.
    """
    import copy

    import torch

    from finwidget.interventions.cached_run import CachedRun
    from finwidget.interventions.spec import HeadIntervention, InterventionSet
    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)
    ablation = InterventionSet([HeadIntervention(layer, head, mode="zero")])
    run = CachedRun(model, task, [text])
    fast = run.predict(ablation)[0].logit_diff
    batch = task.encode([text])
    with torch.no_grad(), ablation.applied(model):
        full = float(task.logit_diff(task.answer_logits(model, batch))[0])
    clean_full = float(task.logit_diff(task.answer_logits(model, batch))[0])
    exact_model = copy.deepcopy(model).double()
    tolerance = 0.0
    for applied, measured in ((ablation, full), (InterventionSet([]), clean_full)):
        with torch.no_grad(), applied.applied(exact_model):
            logits = exact_model(**batch).logits[0, -1, list(task.answer_token_ids)]
        exact = float(logits[0] - logits[1])
        eps = torch.finfo(torch.float32).eps
        tolerance = max(tolerance, 2 * abs(measured - exact) + 2 * eps * float(logits.abs().sum()))
    assert abs(fast - full) <= tolerance, (fast, full, tolerance)
    assert abs(run.clean[0].logit_diff - clean_full) <= tolerance
    return run.clean[0].logit_diff, fast, tolerance


def most_important_head(model, tokenizer, text):
    """The head whose zero-ablation moves the logit difference most on ``text`` (Python API)."""
    from finwidget.interventions.sweep import sweep_heads
    from finwidget.task import EarningsTask

    table = sweep_heads(model, EarningsTask(tokenizer), text, mode="zero", progress=False)
    row = table.loc[table["change"].abs().idxmax()]
    return int(row["layer"]), int(row["head"]), float(row["change"])


def kernel_value(driver: NotebookDriver, expression: str):
    """Evaluate ``expression`` in the notebook's kernel and return it (through JSON)."""
    marker = "@@finwidget-test@@"
    text = output_text(
        driver.append_and_run(f"import json as _j; print({marker!r} + _j.dumps({expression}))")
    )
    lines = [line for line in text.splitlines() if line.startswith(marker)]
    assert lines, f"no value printed for {expression!r}; cell output: {text!r}"
    return json.loads(lines[-1][len(marker) :])


def test_quickstart_explorer_end_to_end(notebook_dir, page, artifacts, demo_model, browser):
    server, folder, name = notebook_dir
    page, watch = page
    shutil.copy(QUICKSTART, folder / "quickstart.ipynb")

    # 1. open and run the quick start, wait for the explorer to draw
    driver = NotebookDriver(page, server)
    driver.open(f"{name}/quickstart.ipynb")
    loaded = watch.snapshot()
    assert watch.unknown_load_problems(loaded) == [], watch.summary()
    driver.run_all()
    explorer = ExplorerPage(page)
    driver.wait_until(explorer.is_ready, timeout=180, what="the explorer's first draw")
    driver.wait_all_executed(timeout=240)
    assert driver.cell_errors() == []
    explorer.root.scroll_into_view_if_needed()
    artifacts.shot(page, "explorer-drawn")
    layers, heads = explorer.geometry()
    model, tokenizer = demo_model
    assert (layers, heads) == (model.config.num_hidden_layers, model.config.num_attention_heads)

    # 2. select a number: the grid and the matrix follow the selection
    grid_before = explorer.grid_values()
    matrix_before = explorer.matrix_state()
    spans = explorer.spans()
    numbers = [s for s in spans if s["kind"] == "number"]
    assert numbers, "the statement view shows no number spans"
    # the change of a rule item (the planted mechanism reads it), else a number in the middle
    rule_names = [s["index"] for s in spans if s["text"].strip() == "Net income"]
    after_name = [s for s in numbers if rule_names and s["index"] > rule_names[0]]
    chosen = after_name[0] if after_name else numbers[len(numbers) // 2]
    explorer.select_span(chosen["index"])
    explorer.wait_idle()
    explorer._wait(
        "const cells = [...root.querySelectorAll('[data-testid=head-cell]')];"
        " return cells.map(c => c.getAttribute('data-value') + '|' + c.style.backgroundColor).join() !== arg;",
        arg=",".join(grid_before),
    )
    explorer._wait(
        "return +root.querySelector('canvas[data-testid=attention-matrix]').getAttribute('data-draw-count') > arg;",
        arg=matrix_before["draws"],
    )
    assert explorer.grid_values() != grid_before
    selected = [s["index"] for s in explorer.spans() if s["selected"]]
    assert chosen["index"] in selected
    artifacts.shot(page, "number-selected")
    # the selection is a traitlet: Python sees the span the page selected
    python_selection = kernel_value(driver, "explorer.selection")
    assert python_selection["start"] <= chosen["index"] < python_selection["end"], python_selection

    # 3. ablate the head that matters most (found with the Python API in this process)
    text = kernel_value(driver, "explorer.session.text")
    layer, head, change = most_important_head(model, tokenizer, text)
    clean, ablated, tolerance = python_api_ablation(model, tokenizer, text, layer, head)
    assert abs(change) > MIN_TOP_HEAD_EFFECT, f"the top head moves the logit difference by only {change}"
    # finwidget/demo/model/MODEL_CARD.md: the planted rule is read by layer-0 heads 1 and 2
    assert (layer, head) in PLANTED_HEADS, f"top head L{layer} H{head} is not one the model card names"
    shown_clean = explorer.prediction()
    assert abs(shown_clean["value"] - clean) <= tolerance, (shown_clean, clean)
    explorer.toggle_ablation(layer, head, ablated_after=True)
    shown = explorer.prediction()
    assert abs(shown["value"] - ablated) <= tolerance, (shown, ablated)
    assert abs(shown["clean"] - clean) <= tolerance, (shown, clean)
    assert [layer, head, "zero"] in shown["ablated"]
    explorer.focus_head(layer, head)
    assert explorer.matrix_state()["layer"] == str(layer) and explorer.matrix_state()["head"] == str(head)
    explorer.root.scroll_into_view_if_needed()
    artifacts.shot(page, f"ablated-L{layer}H{head}")
    artifacts.shot(explorer.root, "explorer-only")
    python_ablations = kernel_value(driver, "explorer.ablations")
    assert [[a["layer"], a["head"], a["mode"]] for a in python_ablations] == [[layer, head, "zero"]], (
        python_ablations
    )

    # 4. restore it: back to the clean number
    explorer.toggle_ablation(layer, head, ablated_after=False)
    restored = explorer.prediction()
    assert abs(restored["value"] - clean) <= tolerance, (restored, clean)
    assert restored["ablated"] == []
    artifacts.shot(page, "restored")

    # 5. export to HTML, open the file with no server: it draws, offline, quietly
    export_path = folder / "explorer-export.html"
    kernel_value(driver, f"explorer.save_html({str(export_path)!r}) and None")
    assert watch.problems_since(loaded) == [], watch.summary()
    assert export_path.is_file()
    exported, exported_watch = browser.new_page()
    try:
        exported.goto(export_path.as_uri())
        offline = ExplorerPage(exported)
        offline.wait_ready(timeout_s=60)
        assert [s["index"] for s in offline.spans() if s["selected"]] == selected
        artifacts.shot(exported, "export-opened", full_page=True)
        assert exported_watch.problems_since((0, 0, 0)) == [], exported_watch.summary()
        non_file = [u for u in exported_watch.requests if not u.startswith(("file:", "data:", "blob:"))]
        assert non_file == [], f"the exported page made network requests: {non_file}"
    finally:
        exported.close()
