"""Make ``docs/explorer.png``, the README's picture of the explorer (not a test).

    .venv/bin/python tests/browser/make_docs_screenshot.py [output.png]

Real JupyterLab 4 and headless Chromium, the shipped demo model on the quick start's
statement: the change of Net income (a rule item of the planted mechanism) selected,
the head whose ablation moves the answer most (found with the Python API) ablated and
focused, so the picture shows the prediction flipped and that head's attention.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

from browser_harness import REPO_ROOT, BrowserSession, JupyterServer, NotebookDriver, write_notebook
from explorer_page import ExplorerPage
from test_explorer_e2e import kernel_value, most_important_head

NOTEBOOK = [
    (
        "import finwidget\n"
        "from finwidget.demo import make_statements\n"
        "from finwidget.widgets import AttentionExplorer\n"
        "model, tokenizer = finwidget.load_demo_model()\n"
        "text = make_statements(8, seed=2026)[0].text\n"
        "explorer = AttentionExplorer(model, tokenizer, text)\n"
        "explorer"
    ),
]


def main(output: Path) -> None:
    from finwidget import load_demo_model

    model, tokenizer = load_demo_model()
    with tempfile.TemporaryDirectory(prefix="fw-shot-") as tmp:
        tmp = Path(tmp)
        server = JupyterServer("lab", tmp / "root", tmp / "state")
        browser = None
        try:
            server.start()
            browser = BrowserSession(tmp / "profile", viewport=(1800, 1500))
            page, watch = browser.new_page()
            write_notebook(tmp / "root" / "shot.ipynb", NOTEBOOK)
            driver = NotebookDriver(page, server)
            driver.open("shot.ipynb")
            page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
            driver.run_all()
            explorer = ExplorerPage(page)
            driver.wait_until(explorer.is_ready, timeout=180, what="the explorer's first draw")
            driver.wait_all_executed()

            text = kernel_value(driver, "explorer.session.text")
            layer, head, change = most_important_head(model, tokenizer, text)
            spans = explorer.spans()
            name = next(s["index"] for s in spans if s["text"].strip() == "Net income")
            number = next(s for s in spans if s["kind"] == "number" and s["index"] > name)
            explorer.select_span(number["index"])
            explorer.wait_idle()
            explorer.toggle_ablation(layer, head, ablated_after=True)
            explorer.focus_head(layer, head)
            explorer.wait_idle()
            driver._eval("panel.content.widgets[0].inputHidden = true;")
            page.wait_for_timeout(500)
            explorer.root.scroll_into_view_if_needed()
            page.mouse.move(0, 0)  # no tooltip in the picture
            page.wait_for_timeout(300)
            output.parent.mkdir(parents=True, exist_ok=True)
            explorer.root.screenshot(path=str(output))
            print(f"wrote {output}: L{layer} H{head} ablated (change {change:+.2f}); {watch.summary()}")
        finally:
            if browser is not None:
                browser.close()
            server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "docs" / "explorer.png")
