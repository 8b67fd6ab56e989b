"""The explorer's analysis controls in JupyterLab 4 and Notebook 7, and the report page.

- "mean" through the UI equals the Python API's mean ablation with the same reference
  set (exactly: the same code path), and the UI names that set;
- the clean / ablated / difference switch redraws a later layer's matrix from the
  ablated run and labels it;
- Ctrl+Z / Ctrl+Shift+Z with the focus inside the widget undo and redo ablations;
- ``finwidget report``'s page, opened from a file: focused on the sweep's top head,
  focusing another head works offline, kernel-only controls disabled with the reason.
"""

from __future__ import annotations

from analysis_page import AnalysisPage
from browser_harness import NotebookDriver, write_notebook

SEED = 3


def test_mean_run_switch_and_undo(notebook_dir, page, artifacts):
    from finwidget import load_demo_model
    from finwidget.demo import make_statements
    from finwidget.interventions.sweep import sweep_heads
    from finwidget.task import EarningsTask
    from finwidget.widgets.reference import DEMO_REFERENCE_COUNT, DEMO_REFERENCE_SEED

    server, folder, name = notebook_dir
    page, watch = page
    write_notebook(
        folder / "analysis.ipynb",
        [
            "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()",
            (
                "from finwidget.demo import make_statements\n"
                "from finwidget.widgets import AttentionExplorer\n"
                f"explorer = AttentionExplorer(model, tokenizer, make_statements(3, seed={SEED}))\n"
                "explorer"
            ),
        ],
    )
    driver = NotebookDriver(page, server)
    driver.open(f"{name}/analysis.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = AnalysisPage(page)
    driver.wait_until(explorer.is_ready, timeout=240, what="the explorer's first draw")
    driver.wait_all_executed(timeout=240)
    assert "64 demo statements" in explorer.text("reference-name")

    # "mean" from the UI = the Python API's mean over the same reference statements.
    explorer.set_select("ablation-mode", "mean")
    explorer.toggle_ablation(0, 1, ablated_after=True)
    shown = explorer.prediction()
    assert [0, 1, "mean"] in shown["ablated"]
    model, tokenizer = load_demo_model()
    text = make_statements(3, seed=SEED)[0].text
    api = sweep_heads(
        model, EarningsTask(tokenizer), [text], mode="mean", heads=[(0, 1)], progress=False, batch_size=1,
        reference=make_statements(DEMO_REFERENCE_COUNT, seed=DEMO_REFERENCE_SEED),
    )
    assert shown["value"] == api["logit_diff"][0] and shown["clean"] == api["clean_logit_diff"][0]
    assert abs(shown["value"] - shown["clean"]) > 5  # the model card's size, not a per-statement mean's

    # The run switch: layer 1's matrix from the ablated run, labelled.
    explorer.focus_head(1, 0)
    clean = explorer.matrix_state()
    explorer.set_select("attention-run", "ablated")
    explorer.wait_run_label("ablated run (L0H1 mean)")
    explorer._wait("return +root.querySelector('canvas[data-testid=attention-matrix]').getAttribute('data-draw-count') > arg;", arg=clean["draws"])
    ablated = explorer.matrix_state()
    assert ablated["hash"] != clean["hash"]
    artifacts.shot(page, "ablated-run")
    explorer.set_select("attention-run", "difference")
    explorer.wait_run_label("difference: ablated (L0H1 mean) minus clean")
    explorer.set_select("attention-run", "clean")
    explorer.wait_run_label("clean run")
    explorer._wait("return root.querySelector('canvas[data-testid=attention-matrix]').toDataURL().length > 0;")
    assert explorer.matrix_state()["hash"] == clean["hash"]

    # Undo / redo from the keyboard, with the focus inside the widget.
    explorer.cell(1, 0).focus()
    page.keyboard.press("Control+z")
    explorer._wait("return root.querySelectorAll('[data-testid=ablated-list] li').length === 0"
                   " && root.getAttribute('data-finwidget-busy') !== '1';")
    assert explorer.prediction()["value"] == shown["clean"]
    page.keyboard.press("Control+Shift+z")
    explorer._wait("return root.querySelectorAll('[data-testid=ablated-list] li').length === 1"
                   " && root.querySelector('[data-testid=prediction-panel]').getAttribute('data-pending') !== '1';")
    assert explorer.prediction()["value"] == shown["value"]
    assert watch.problems_since(loaded) == [], watch.summary()


def test_the_report_page_works_offline(browser, tmp_path, artifacts):
    from finwidget import load_demo_model
    from finwidget.demo import make_statements
    from finwidget.widgets.report import write_report

    model, tokenizer = load_demo_model()
    path = write_report(model, tokenizer, [s.text for s in make_statements(3, seed=7)], tmp_path / "report.html")
    page, watch = browser.new_page()
    try:
        page.goto(path.as_uri())
        explorer = AnalysisPage(page)
        explorer.wait_ready(timeout_s=60)
        assert page.locator("[data-testid=sweep-table] tbody tr").count() == 8
        top = page.locator("[data-testid=top-head]").first
        focus = (int(top.get_attribute("data-layer")), int(top.get_attribute("data-head")))
        state = explorer.matrix_state()
        assert (int(state["layer"]), int(state["head"])) == focus != (0, 0)
        # every head is embedded: focusing another works without a kernel
        other = (1, 2) if focus != (1, 2) else (1, 1)
        explorer.focus_head(*other)
        assert explorer.text("status") == ""
        note = explorer.text("offline-note")
        assert "no kernel" in note
        for testid in ("sweep", "reset", "sweep-all", "undo", "attention-run"):
            control = explorer.testid(testid).first
            assert control.is_disabled(), testid
            assert "no kernel" in (control.get_attribute("title") or ""), testid
        artifacts.shot(page, "report", full_page=True)
        assert watch.problems_since((0, 0, 0)) == [], watch.summary()
    finally:
        page.close()
