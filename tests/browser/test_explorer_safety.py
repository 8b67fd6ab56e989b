"""Statements are data, never code: HTML in a statement shows as text, live and exported.

Filings contain HTML. A statement carrying ``<script>``, ``<img onerror>``, a stray
``</script>`` and ``<svg onload>`` is shown in the explorer (and in the guide's bqplot
heat map) in real JupyterLab, in Notebook 7 and in the exported standalone page;
nothing may run (no dialog, no console error, no element made from the text) and the
text must be shown as written.
"""

from __future__ import annotations

import json

from browser_harness import NotebookDriver, write_notebook
from explorer_page import ExplorerPage

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</script>",
    "<svg onload=alert(1)>",
    '"><script>alert(document.domain)</script>',
    '<img src=x onerror="window.__finwidget_pwned=1">',
]

MODEL_CELL = "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()"


def hostile_statement() -> str:
    """A demo statement with HTML payloads in a note line, a line item name and a number's line."""
    from finwidget.demo import make_statements

    lines = make_statements(1, seed=11)[0].text.splitlines()
    hostile = [
        lines[0],
        f"Note {PAYLOADS[0]} on revenue recognition",
        f"{PAYLOADS[1]} Other income: change +1,204 | 2019: 5,310 | 2018: 4,106",
        f"Footnote {PAYLOADS[2]} {PAYLOADS[3]} restated {PAYLOADS[4]} {PAYLOADS[5]}",
    ]
    return "\n".join(hostile + lines[1:])


def _squash(text: str) -> str:
    return "".join(text.split())


def check_page_is_inert(page, scope: str = "") -> None:
    """No element made from statement text: no img/svg/script/iframe/object inside the explorer."""
    made = page.evaluate(
        """(scope) => {
          const roots = document.querySelectorAll((scope + ' .fw-explorer').trim());
          const found = [];
          for (const root of roots)
            for (const el of root.querySelectorAll('img, svg, script, iframe, object, embed, [onload], [onerror]'))
              found.push(el.outerHTML.slice(0, 120));
          return found;
        }""",
        scope,
    )
    assert made == [], f"elements made from statement text: {made}"
    # anywhere on the page (the bqplot heat map's labels too): no element born from a payload
    # (embedded JSON data may hold the text, as data)
    anywhere = page.evaluate(
        """() => [...document.querySelectorAll('img[src="x"], [onerror], [onload], script')]
                  .filter(el => el.tagName !== 'SCRIPT'
                          || (el.type !== 'application/json' && el.textContent.includes('alert(')))
                  .map(el => el.outerHTML.slice(0, 120))"""
    )
    assert anywhere == [], f"elements made from statement text: {anywhere}"
    assert page.evaluate("() => window.__finwidget_pwned === undefined")


def test_html_in_statements_is_shown_as_text_live_and_exported(
    notebook_dir, page, artifacts, browser, tmp_path
):
    server, folder, name = notebook_dir
    page, watch = page
    text = hostile_statement()
    write_notebook(
        folder / "safety.ipynb",
        [
            MODEL_CELL,
            f"text = {json.dumps(text)}\nprint(text)",
            (
                "from finwidget.interpretability_tools import quick_attention_analysis\n"
                "analyzer = quick_attention_analysis(model, tokenizer, text, layer_idx=0)\n"
                "analyzer.plot_attention_heatmap(layer_idx=0, head_idx=0)"
            ),
            (
                "from finwidget.widgets import AttentionExplorer\n"
                "explorer = AttentionExplorer(model, tokenizer, text)\nexplorer"
            ),
        ],
    )
    driver = NotebookDriver(page, server)
    driver.open(f"{name}/safety.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = ExplorerPage(page)
    driver.wait_until(explorer.is_ready, timeout=180, what="the explorer's first draw")
    driver.wait_all_executed()
    assert driver.cell_errors() == []

    # live: the payloads are text in the statement view, nothing ran, nothing was made
    shown = _squash(explorer.statement_text())
    for payload in PAYLOADS:
        assert _squash(payload) in shown, f"{payload!r} is not shown as text"
    payload_spans = [s for s in explorer.spans() if "<" in s["text"] or ">" in s["text"]]
    assert payload_spans, "no span carries the HTML characters"
    explorer.span(payload_spans[0]["index"]).hover()
    explorer.select_span(payload_spans[0]["index"])
    explorer.wait_idle()
    explorer.root.scroll_into_view_if_needed()
    artifacts.shot(page, "live")
    check_page_is_inert(page)
    assert watch.problems_since(loaded) == [], watch.summary()

    # exported: the same, from a file with no server
    export_path = tmp_path / "hostile.html"
    driver.append_and_run(f"explorer.save_html({str(export_path)!r});")
    html = export_path.read_text()
    assert html.count("</script>") == html.count("<script"), "a statement's </script> reached the page raw"
    exported, exported_watch = browser.new_page()
    try:
        exported.goto(export_path.as_uri())
        offline = ExplorerPage(exported)
        offline.wait_ready(timeout_s=60)
        shown = _squash(offline.statement_text())
        for payload in PAYLOADS:
            assert _squash(payload) in shown, f"{payload!r} is not shown as text in the export"
        offline.span(payload_spans[0]["index"]).hover()
        artifacts.shot(exported, "exported", full_page=True)
        check_page_is_inert(exported)
        assert exported_watch.problems_since((0, 0, 0)) == [], exported_watch.summary()
    finally:
        exported.close()
    assert watch.problems_since(loaded) == [], watch.summary()
