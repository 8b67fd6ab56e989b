"""An explorer that explains itself, in real JupyterLab 4 and Notebook 7 (issue 11, the
presentation half): every view labelled, one meaning per word, fits the notebook at
450 / 900 / 1400 px and in the dark theme, operable by keyboard, no serious or critical
axe-core violations, and exports that carry their title, legend and caption.

One notebook per flavour; the checks run in sequence on the same explorer (a JupyterLab
start and the demo model's first draw cost more than all the checks together).
Screenshots of every step: ``test-artifacts/browser/<test>/`` (look at them).
"""

from __future__ import annotations

import itertools
import json
import re

from browser_harness import REPO_ROOT, NotebookDriver, write_notebook
from explorer_page import ExplorerPage

from finwidget.analysis.metrics import HEAD_MEASURES

AXE_JS = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
NOTEBOOK = [
    "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()",
    (
        "from finwidget.demo import make_statements\n"
        "from finwidget.widgets import AttentionExplorer\n"
        "explorer = AttentionExplorer(model, tokenizer, make_statements(8, seed=2026)[0].text)\n"
        "explorer"
    ),
]

# JS: relative luminance of a CSS rgb()/rgba() colour
_LUMINANCE = (
    "const lum = (c) => { const m = c.match(/\\d+(\\.\\d+)?/g).map(Number);"
    " return (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]) / 255; };"
)


def _labels(explorer: ExplorerPage, testid: str) -> list[dict]:
    """The axis labels shown in ``testid``: text, full name and box."""
    return explorer._js(
        "return [...root.querySelectorAll(`[data-testid=${arg}] .fw-axis-label`)].map(n => {"
        " const r = n.getBoundingClientRect();"
        " return {text: n.textContent, full: n.getAttribute('title'), index: +n.getAttribute('data-index'),"
        " x0: r.left, x1: r.right, y0: r.top, y1: r.bottom}; });",
        arg=testid,
    )


def _overlaps(labels: list[dict], vertical_axis: bool) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes overlap along the axis they are laid out on."""
    key0, key1 = ("y0", "y1") if vertical_axis else ("x0", "x1")
    ordered = sorted(labels, key=lambda b: b[key0])
    return [(a["text"], b["text"]) for a, b in itertools.pairwise(ordered) if b[key0] < a[key1] - 0.5]


def _set_select(explorer: ExplorerPage, testid: str, value: str) -> None:
    explorer.root.locator(f"[data-testid={testid}]").select_option(value)


def _wait_matrix_draw(explorer: ExplorerPage, after: int) -> None:
    explorer._wait(
        "return +root.querySelector('[data-testid=attention-matrix]').getAttribute('data-draw-count') > arg;",
        arg=after,
    )


def _draw_count(explorer: ExplorerPage) -> int:
    return explorer._js("return +root.querySelector('[data-testid=attention-matrix]').getAttribute('data-draw-count');")


def _active(page) -> dict:
    return page.evaluate(
        "() => { const a = document.activeElement; return {testid: a && a.getAttribute('data-testid'),"
        " index: a && a.getAttribute('data-span-index'), tag: a && a.tagName}; }"
    )


def _tab_until(page, testid: str, limit: int = 60) -> dict:
    """Press Tab until the focus lands on an element with ``testid`` (keyboard reachability)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = _active(page)
        if now["testid"] == testid:
            return now
    raise AssertionError(f"Tab never reached [data-testid={testid}] in {limit} presses; last: {_active(page)}")


def _axe(page, explorer: ExplorerPage) -> list[dict]:
    """Serious and critical axe-core violations inside the explorer's root."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE_JS))
    return explorer._js(
        "return window.axe.run(root, {resultTypes: ['violations']}).then(r => r.violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.html.slice(0, 160))})));"
    )


def _download(page, explorer: ExplorerPage, button: str, path) -> bytes:
    with page.expect_download() as info:
        explorer.root.locator(f"[data-testid={button}]").click()
    info.value.save_as(str(path))
    return path.read_bytes()


def _no_horizontal_clipping(explorer: ExplorerPage) -> dict:
    """Widths of what could clip: the statement box, the explorer root, the matrix frame."""
    return explorer._js(
        "const b = root.querySelector('.fw-statement-body'); const f = root.querySelector('.fw-matrix-frame');"
        " const out = root.parentElement.getBoundingClientRect();"
        " const r = root.getBoundingClientRect();"
        " return {host: out.width, body: [b.scrollWidth, b.clientWidth], root: [root.scrollWidth, root.clientWidth],"
        " frame: [f.scrollWidth, f.clientWidth], rootRight: r.right, hostRight: out.right,"
        " canvas: root.querySelector('[data-testid=attention-matrix]').getBoundingClientRect().width};"
    )


def test_explorer_explains_itself(notebook_dir, page, artifacts):
    assert AXE_JS.exists(), f"{AXE_JS} missing: run `npm install` (axe-core is a devDependency)"
    server, folder, name = notebook_dir
    page, watch = page
    write_notebook(folder / "readable.ipynb", NOTEBOOK)
    driver = NotebookDriver(page, server)
    page.set_viewport_size({"width": 1400, "height": 1100})
    driver.open(f"{name}/readable.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = ExplorerPage(page)
    driver.wait_until(explorer.is_ready, timeout=180, what="the explorer's first draw")
    driver.wait_all_executed()
    explorer.wait_idle()
    explorer.root.scroll_into_view_if_needed()
    artifacts.shot(explorer.root, "first-draw")

    # ---------------------------------------------------------------- 1. labels
    spans = explorer.spans()
    line_item_names = {s["text"].strip() for s in spans if s["kind"] == "line_item_name"}
    assert line_item_names, "the demo statement has line items"
    before = _draw_count(explorer)
    _set_select(explorer, "matrix-aggregate", "line_items")
    _wait_matrix_draw(explorer, before)
    rows = _labels(explorer, "matrix-row-labels")
    cols = _labels(explorer, "matrix-col-labels")
    row_names = {r["full"].strip() for r in rows}
    # The line items, the statement's other lines (headings, question) and the answer
    # position fit at 480 px: every one is named, on both axes, with its text as written.
    assert line_item_names <= row_names, line_item_names - row_names
    assert {c["full"].strip() for c in cols} == row_names
    assert "answer position" in row_names
    statement = explorer.statement_text()
    for label in row_names - {"answer position"}:
        assert label in statement, label
    assert not _overlaps(rows, vertical_axis=True) and not _overlaps(cols, vertical_axis=False)
    artifacts.shot(explorer.root.locator("[data-testid=matrix-view]"), "matrix-line-items")

    before = _draw_count(explorer)
    _set_select(explorer, "matrix-aggregate", "tokens")
    _wait_matrix_draw(explorer, before)
    rows = _labels(explorer, "matrix-row-labels")
    assert rows, "token rows are labelled"
    assert not _overlaps(rows, vertical_axis=True), _overlaps(rows, vertical_axis=True)
    assert not _overlaps(_labels(explorer, "matrix-col-labels"), vertical_axis=False)
    # a span's label sits on the span's first token: every labelled span text is in the statement
    named = [r["full"] for r in rows if r["full"] and r["full"] != "answer position"]
    assert any(n.strip() in statement for n in named)
    zoomed_out = {r["index"] for r in rows}
    canvas = explorer.root.locator("[data-testid=attention-matrix]")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    for _ in range(8):
        page.mouse.wheel(0, -200)
        page.wait_for_timeout(60)
    page.wait_for_timeout(300)
    rows = _labels(explorer, "matrix-row-labels")
    assert not _overlaps(rows, vertical_axis=True)
    # zoomed in, the labels are of other (denser, nearer) tokens than at full view
    assert {r["index"] for r in rows} != zoomed_out
    artifacts.shot(explorer.root.locator("[data-testid=matrix-view]"), "matrix-tokens-zoomed")
    explorer.root.locator("[data-testid=matrix-reset-zoom]").click()

    # tooltip at the cursor, inside the widget
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.9)
    page.wait_for_timeout(200)
    tip = explorer._js(
        "const t = root.querySelector('[data-testid=matrix-info]'); const r = t.getBoundingClientRect();"
        " const o = root.getBoundingClientRect();"
        " return {hidden: t.hidden, text: t.textContent, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom,"
        " ox0: o.left, oy0: o.top, ox1: o.right, oy1: o.bottom};"
    )
    assert not tip["hidden"] and "query" in tip["text"] and "key" in tip["text"], tip
    assert tip["x0"] >= tip["ox0"] - 1 and tip["x1"] <= tip["ox1"] + 1 and tip["y1"] <= tip["oy1"] + 1, tip
    cx, cy = box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.9
    near = min(abs(tip["x0"] - cx), abs(tip["x1"] - cx)) < 40 and min(abs(tip["y0"] - cy), abs(tip["y1"] - cy)) < 40
    assert near, ("tooltip not at the cursor", tip, cx, cy)
    artifacts.shot(explorer.root.locator("[data-testid=matrix-view]"), "matrix-tooltip")
    page.mouse.move(0, 0)

    # grid: layer and head numbers; colour bars with the catalogue's units
    layers, heads = explorer.geometry()
    head_labels = explorer._js("return [...root.querySelectorAll('[data-testid=head-label]')].map(n => n.textContent);")
    assert head_labels == [f"H{h}" for h in range(heads)], head_labels
    row_labels = explorer._js("return [...root.querySelectorAll('.fw-grid-row[data-layer] .fw-row-label')].map(n => n.textContent);")
    assert row_labels == [f"L{i}" for i in range(layers)], row_labels
    catalogue = explorer._js(
        "return [...root.querySelectorAll('[data-testid=grid-measure] option')].map(o => [o.value, o.textContent]);"
    )
    legends = explorer._js(
        "return Object.fromEntries(['grid-legend', 'matrix-legend', 'statement-legend', 'flow-legend'].map(id => {"
        " const n = root.querySelector(`[data-testid=${id}]`);"
        " return [id, n && {unit: n.getAttribute('data-unit'), high: n.getAttribute('data-high'), text: n.textContent}]; }));"
    )
    for testid, legend in legends.items():
        assert legend and legend["unit"], (testid, legend)
    assert legends["matrix-legend"]["unit"] == "attention mass"

    # "?" shows the measure's definition, by name
    help_button = explorer.root.locator("[data-testid=measure-help-button]")
    assert explorer.root.locator("[data-testid=measure-help]").is_hidden()
    help_button.click()
    help_text = explorer.root.locator("[data-testid=measure-help]").inner_text()
    measure = explorer._js("return root.querySelector('[data-testid=grid-measure]').value;")
    assert measure in help_text and "Unit:" in help_text, help_text
    assert help_button.get_attribute("aria-expanded") == "true"
    artifacts.shot(explorer.root.locator("[data-testid=head-grid]"), "grid-help")

    # ---------------------------------------------------------------- 2. one meaning per word
    number = next(s["index"] for s in spans if s["kind"] == "number")
    explorer.select_span(number)
    explorer.wait_idle()
    for direction, statement_words, matrix_words in (
        ("to", "Who looks at", "columns"),
        ("from", "Where", "rows"),
    ):
        _set_select(explorer, "direction", direction)
        explorer.wait_idle()
        explorer._wait(
            "return root.querySelector('[data-testid=statement-view] .fw-caption').textContent.startsWith(arg);",
            arg=statement_words,
        )
        matrix_caption = explorer.root.locator("[data-testid=matrix-caption]").inner_text()
        assert matrix_words in matrix_caption, (direction, matrix_caption)
        legend = explorer.root.locator("[data-testid=statement-legend]").inner_text()
        assert f"attention {direction} the selection" in legend, legend
        # the grid's selection measure and the layer flow obey the same switch
        explorer._wait(
            "return root.querySelector('[data-testid=layer-flow] .fw-caption').textContent.includes(arg);",
            arg="look at" if direction == "to" else "looks,",
        )
        assert explorer._js("return root.querySelector('[data-testid=grid-measure]').value;") == "attention_to_selection"
        assert explorer.root.locator("[data-testid=grid-direction-note]").is_hidden()
        artifacts.shot(explorer.root, f"direction-{direction}")

    # every "more" measure: the larger the value, the darker the cell; entropy says dark = diffuse
    attention_measures = {m.name for m in HEAD_MEASURES if m.needs == "attention"}
    for value, label in catalogue:
        if value not in attention_measures:  # sweep or model readouts: no values before a sweep/readout
            continue
        _set_select(explorer, "grid-measure", value)
        explorer._wait(
            "return root.querySelector('[data-testid=grid-legend]').getAttribute('data-empty') === null"
            " && [...root.querySelectorAll('[data-testid=head-cell]')].every(c => c.getAttribute('data-value') !== '');"
        )
        pairs = explorer._js(
            _LUMINANCE + "return [...root.querySelectorAll('[data-testid=head-cell]')]"
            ".map(c => [+c.getAttribute('data-value'), lum(getComputedStyle(c).backgroundColor)]);"
        )
        pairs.sort()
        # Colours are 8-bit per channel: rounding moves a luminance by at most 0.5 / 255
        # up or down, so two close values may differ by up to 1 / 255 the "wrong" way.
        for (v0, l0), (v1, l1) in itertools.pairwise(pairs):
            assert v1 == v0 or l1 <= l0 + 1 / 255, (value, "larger value not darker", pairs)
        assert pairs[-1][1] < pairs[0][1], (value, "the largest value is not darker than the smallest")
        if value.startswith("entropy"):
            assert "diffuse" in label, label
            high = explorer.root.locator("[data-testid=grid-legend]").get_attribute("data-high")
            assert "dark = more entropy" in high and "diffuse" in high, high
    artifacts.shot(explorer.root.locator("[data-testid=head-grid]"), "grid-entropy")

    # ---------------------------------------------------------------- 3. keyboard
    explorer.root.locator("[data-testid=direction]").focus()
    first = _tab_until(page, "span")
    assert first["index"] is not None
    page.keyboard.press("ArrowRight")
    moved = _active(page)
    assert moved["testid"] == "span" and moved["index"] != first["index"], (first, moved)
    page.keyboard.press("Enter")
    explorer._wait(
        "return root.querySelector(`[data-testid=span][data-span-index=\"${arg}\"]`).getAttribute('data-selected') === '1';",
        arg=moved["index"],
    )
    page.keyboard.press("ArrowDown")
    assert _active(page)["testid"] == "span"
    artifacts.shot(explorer.root.locator("[data-testid=statement-view]"), "keyboard-span-focus")
    explorer.root.locator("[data-testid=matrix-reset-zoom]").focus()
    _tab_until(page, "attention-matrix", limit=5)
    selection_before = explorer._js("return [...root.querySelectorAll('[data-testid=span][data-selected=\"1\"]')].map(n => n.getAttribute('data-span-index'));")
    for key in ("ArrowUp", "ArrowUp", "ArrowRight", "ArrowRight", "ArrowRight"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    explorer._wait(
        "return JSON.stringify([...root.querySelectorAll('[data-testid=span][data-selected=\"1\"]')]"
        ".map(n => n.getAttribute('data-span-index'))) !== arg;",
        arg=json.dumps(selection_before),
    )
    kb_tip = explorer._js("const t = root.querySelector('[data-testid=matrix-info]'); return [t.hidden, t.textContent];")
    assert not kb_tip[0] and "query" in kb_tip[1], kb_tip
    artifacts.shot(explorer.root.locator("[data-testid=matrix-view]"), "keyboard-matrix-cursor")
    page.keyboard.press("Tab")

    # ---------------------------------------------------------------- accessibility
    violations = _axe(page, explorer)
    artifacts.write("axe.txt", repr(violations))
    assert not violations, violations

    # ---------------------------------------------------------------- 4. exports
    explorer.toggle_ablation(0, 1, ablated_after=True)
    explorer.wait_idle()
    _set_select(explorer, "export-view", "explorer")
    svg = _download(page, explorer, "export-svg", artifacts.directory / "export-explorer.svg").decode()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    texts = [re.sub(r"<[^>]+>", "", t) for t in re.findall(r"<text[^>]*>.*?</text>", svg)]
    joined = "\n".join(texts).replace("&amp;", "&").replace("&quot;", '"')
    for piece in ("finwidget explorer", "Attention of head", "Layers × heads", "Statement:", "Layer flow", "Prediction"):
        assert piece in joined, piece
    for piece in ("model ", "statement “", "head L", "ablations: L0 H1 (zero)"):
        assert piece in joined, (piece, joined[-600:])
    assert "attention mass" in joined  # the colour bars' unit
    assert "matrix-info" not in svg and "fw-tooltip" not in svg  # drawn from data, no hover box
    _download(page, explorer, "export-png", artifacts.directory / "export-explorer.png")
    _set_select(explorer, "export-view", "matrix")
    png = _download(page, explorer, "export-png", artifacts.directory / "export-matrix.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert width >= 2 * 600, width  # framed (axes and legend), at 2x for print
    _download(page, explorer, "export-svg", artifacts.directory / "export-matrix.svg")
    explorer.wait_idle()
    status = explorer.root.locator("[data-testid=status]")
    assert status.get_attribute("data-kind") != "error", status.inner_text()
    _set_select(explorer, "export-view", "grid")
    _download(page, explorer, "export-png", artifacts.directory / "export-grid.png")
    explorer.toggle_ablation(0, 1, ablated_after=False)
    explorer.wait_idle()

    # ---------------------------------------------------------------- 5. reflow
    # The widths are the explorer's own (what a notebook column gives it): the page is
    # made wider than that by the notebook's chrome (sidebars, prompts) measured here.
    chrome = 1400 - explorer._js("return root.getBoundingClientRect().width;")
    for width in (1400, 900, 450):
        page.set_viewport_size({"width": int(width + chrome), "height": 2600})
        page.wait_for_timeout(600)
        sizes = _no_horizontal_clipping(explorer)
        sizes["width"] = explorer._js("return root.getBoundingClientRect().width;")
        artifacts.write(f"reflow-{width}.txt", repr(sizes))
        # Notebook 7 centres its cells in a column of at most about 1100 px: there the
        # explorer fills that column instead.
        assert abs(sizes["width"] - width) < 40 or abs(sizes["width"] - sizes["host"]) < 2, (width, sizes)
        assert sizes["body"][0] <= sizes["body"][1] + 1, (width, "statement clipped", sizes)
        assert sizes["root"][0] <= sizes["root"][1] + 1, (width, "explorer wider than its box", sizes)
        assert sizes["frame"][0] <= sizes["frame"][1] + 1, (width, "matrix frame clipped", sizes)
        assert sizes["rootRight"] <= sizes["hostRight"] + 1, (width, sizes)
        assert sizes["canvas"] >= 250, (width, "matrix too small to read", sizes)
        explorer.root.scroll_into_view_if_needed()
        artifacts.shot(explorer.root, f"reflow-{width}")
    page.set_viewport_size({"width": 1400, "height": 1100})

    # ---------------------------------------------------------------- dark theme
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    explorer._wait(
        _LUMINANCE + "return lum(getComputedStyle(root).backgroundColor) < 0.3 && lum(getComputedStyle(root).color) > 0.6;",
        timeout_s=30,
    )
    page.wait_for_timeout(500)
    # the colours start from the dark background: the smallest value is drawn closest to
    # it, the largest furthest from it (more = stronger contrast), and the legend says so
    explorer._wait(
        "return root.getAttribute('data-finwidget-ready') === '1'"
        " && (root.querySelector('[data-testid=grid-legend] .fw-legend-words')?.textContent ?? '').includes('bright = more');",
        timeout_s=30,
    )
    pairs = explorer._js(
        "const rgb = (c) => c.match(/\\d+(\\.\\d+)?/g).map(Number).slice(0, 3);"
        " const bg = rgb(getComputedStyle(root).backgroundColor);"
        " const far = (c) => { const x = rgb(c); return Math.hypot(x[0] - bg[0], x[1] - bg[1], x[2] - bg[2]); };"
        " return [...root.querySelectorAll('[data-testid=head-cell]')]"
        ".filter(c => c.getAttribute('data-value') !== '')"
        ".map(c => [+c.getAttribute('data-value'), far(getComputedStyle(c).backgroundColor)]);"
    )
    pairs.sort()
    assert len(pairs) > 2, pairs
    assert pairs[0][1] < pairs[-1][1], ("dark theme: the largest value is not further from the background", pairs)
    # 8-bit channels: a distance moves by at most sqrt(3) / 2 from rounding, twice that between two cells
    for (v0, d0), (v1, d1) in itertools.pairwise(pairs):
        assert v1 == v0 or d1 >= d0 - 3**0.5, ("dark theme: larger value closer to the background", pairs)
    explorer.root.scroll_into_view_if_needed()
    artifacts.shot(explorer.root, "dark-theme")
    flow = explorer.root.locator("[data-testid=layer-flow-canvas]")
    flow.scroll_into_view_if_needed()
    artifacts.shot(flow, "dark-theme-flow")
    violations = _axe(page, explorer)
    artifacts.write("axe-dark.txt", repr(violations))
    assert not violations, violations
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    problems = watch.problems_since(loaded)
    assert not problems, problems
