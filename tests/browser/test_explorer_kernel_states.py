"""A vanished kernel: the explorer says so instead of hanging (real JupyterLab comm path).

After the kernel is shut down behind the page's back, a click that needs the kernel
gets a visible message in the status line within the reply timeout, and the page
stays quiet (no uncaught error).

(A cell that merely sleeps does not make the explorer wait: with ipykernel 7 the
widget's messages were answered while ``time.sleep`` ran in a cell, so that case is
not a "busy kernel" here.)
"""

from __future__ import annotations

from browser_harness import NotebookDriver, write_notebook
from explorer_page import ExplorerPage

MODEL_CELL = "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()"
REPLY_TIMEOUT_MS = 1000


def _status(explorer: ExplorerPage) -> dict:
    return explorer._js(
        "const s = root.querySelector('[data-testid=status]');"
        " return {kind: s.getAttribute('data-kind'), text: s.textContent,"
        "         busy: root.getAttribute('data-finwidget-busy')};"
    )


def test_dead_kernel_is_reported(lab_server, page, artifacts):
    page, watch = page
    folder = lab_server.root_dir / "kernel_states"
    write_notebook(
        folder / "states.ipynb",
        [
            MODEL_CELL,
            (
                "from finwidget.demo import make_statements\n"
                "from finwidget.widgets import AttentionExplorer\n"
                "explorer = AttentionExplorer(model, tokenizer, make_statements(1, seed=3)[0].text,\n"
                f"                             settings={{'reply_timeout_ms': {REPLY_TIMEOUT_MS}}})\n"
                "explorer"
            ),
        ],
    )
    driver = NotebookDriver(page, lab_server)
    driver.open("kernel_states/states.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = ExplorerPage(page)
    driver.wait_until(explorer.is_ready, timeout=180, what="the explorer's first draw")
    driver.wait_all_executed()
    assert _status(explorer)["kind"] == "idle"
    explorer.cell(1, 1).click()
    explorer._wait(
        "const c = root.querySelector('canvas[data-testid=attention-matrix]');"
        " return c.getAttribute('data-layer') === '1' && c.getAttribute('data-head') === '1';"
    )
    assert watch.problems_since(loaded) == [], watch.summary()

    # gone: shut the kernel down behind the page's back, then ask for something
    kernel_id = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id")
    lab_server.api("DELETE", f"/api/kernels/{kernel_id}")
    page.wait_for_timeout(1000)
    explorer.cell(0, 1).click()
    explorer._wait(
        "const s = root.querySelector('[data-testid=status]');"
        " return ['slow', 'error'].includes(s.getAttribute('data-kind')) && s.textContent.trim().length > 0;",
        timeout_s=15,
    )
    status = explorer.root.locator("[data-testid=status]")
    status.scroll_into_view_if_needed()
    artifacts.shot(page, "kernel-gone")
    artifacts.write("status.txt", str(_status(explorer)))
    assert watch.page_errors == [], watch.summary()
