"""Browser timings of the explorer widget, side by side with BertViz's head view.

Run:  .venv/bin/python benchmarks/bench_widget.py            (full run, a few minutes)
      .venv/bin/python benchmarks/bench_widget.py --quick    (fewer repeats, no 2048)
      .venv/bin/python benchmarks/bench_widget.py --t4096    (also the 28x28 model at T~4096)

What it measures (headless Chromium, real JupyterLab 4 and kernel, performance marks
set in the page; printed, never asserted):

- cell run -> first complete draw (``data-finwidget-ready="1"``) of
  ``AttentionExplorer(model, tokenizer, text)`` for the demo model and for a random
  Qwen2-shaped model of 28 layers x 28 query heads (4 KV heads, small hidden so it
  runs on CPU) at T = 1024 tokens;
- focus switch (click a grid cell) -> matrix canvas redrawn for that head
  (``data-draw-count`` up, then the next painted frame) at T = 1024 and 2048;
- ablation (shift+click a grid cell) -> prediction panel updated, on the demo model;
- saved widget state at T = 1024 (``ipywidgets.embed.embed_data``, what a saved
  notebook or an HTML export embeds);
- BertViz ``head_view`` on the same attention (from the same model's eager
  ``output_attentions``), in the same browser: Python time, HTML size, load -> drawn
  (its SVG lines and head boxes exist), or that it did not draw within the limit.
  BertViz loads require.js, d3 and jQuery from a CDN; with no network here the
  benchmark answers those three URLs from local copies (``--bertviz-assets``, made
  with ``npm install --prefix DIR d3@5.7.0 jquery@2.2.4 requirejs``) so BertViz is
  measured drawing, not failing to load. BertViz is optional: without the package
  or the assets the comparison is reported as not run.

Targets (issue 5): first draw < 1.5 s, focus switch < 100 ms, ablation < 300 ms,
widget state < 2 MB at T = 1024.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "browser"))
if str(REPO_ROOT) not in sys.path:  # finwidget from this checkout, installed or not
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_ASSETS = Path.home() / ".cache" / "finwidget-bench" / "bertviz-assets"
BERTVIZ_CDN = {
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js": "node_modules/requirejs/require.js",
    "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min.js": "node_modules/d3/dist/d3.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min.js": "node_modules/jquery/dist/jquery.min.js",
}
TARGETS_MS = {"first_draw": 1500.0, "focus_switch": 100.0, "ablation": 300.0}
TARGET_STATE_BYTES = 2 * 1024 * 1024


# --------------------------------------------------------------------------------------
# Models and statements (imported by the benchmark notebook's kernel too)
# --------------------------------------------------------------------------------------


def random_qwen2_model(
    tokenizer,
    layers: int = 28,
    heads: int = 28,
    kv_heads: int = 4,
    head_dim: int = 16,
    seed: int = 0,
    max_positions: int = 8192,
):
    """A randomly initialised ``Qwen2ForCausalLM`` with Qwen2-7B's head layout (28 x 28, 4 KV heads).

    The hidden size is ``heads * head_dim`` (448 by default) so a forward pass at
    T = 2048 takes about a second on CPU. float32, eval mode, SDPA attention.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=heads * head_dim,
        intermediate_size=2 * heads * head_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(config)
    # Peakier attention than the default init (std 0.02 gives near-uniform patterns).
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model.eval()


def statement_of_length(tokenizer, target_tokens: int, seed: int = 0) -> str:
    """A statement text whose prompt (``EarningsTask(tokenizer).prompt``) is at most ``target_tokens`` long.

    Lines of several synthetic statements (finwidget.demo) are stacked, one company
    block after another, until the next line would pass the target; then the
    question. The prompt's real length is ``len(tokenizer(prompt).input_ids)``.
    """
    from finwidget.demo import make_statements
    from finwidget.task import DEFAULT_QUESTION, EarningsTask

    task = EarningsTask(tokenizer)

    def length(lines):
        return len(tokenizer(task.prompt("\n".join(lines + [DEFAULT_QUESTION])))["input_ids"])

    lines: list[str] = []
    for statement in make_statements(200, seed=seed):
        for line in statement.text.splitlines():
            if line.strip() == DEFAULT_QUESTION.strip():
                continue
            if length(lines + [line]) > target_tokens:
                return "\n".join(lines + [DEFAULT_QUESTION])
            lines.append(line)
    return "\n".join(lines + [DEFAULT_QUESTION])


def prompt_length(tokenizer, text: str) -> int:
    from finwidget.task import EarningsTask

    return len(tokenizer(EarningsTask(tokenizer).prompt(text))["input_ids"])


# --------------------------------------------------------------------------------------
# BertViz, on the same attention
# --------------------------------------------------------------------------------------


def bertviz_html(model, tokenizer, text: str) -> tuple[str, float, float]:
    """BertViz head view HTML of ``model`` on ``text``'s prompt: (html, forward seconds, bertviz seconds).

    The attention comes from an eager forward with ``output_attentions=True`` (what
    BertViz's docs prescribe), on the same prompt finwidget shows.
    """
    import torch
    from bertviz import head_view

    from finwidget.task import EarningsTask

    prompt = EarningsTask(tokenizer).prompt(text)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    previous = model.config._attn_implementation
    started = time.perf_counter()
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(input_ids=ids, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(previous)
    forward_seconds = time.perf_counter() - started
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    started = time.perf_counter()
    html = head_view(attentions, tokens, html_action="return").data
    return html, forward_seconds, time.perf_counter() - started


def _serve_bytes(body: bytes):
    def handler(route, request=None):
        route.fulfill(status=200, body=body, headers={"Content-Type": "application/javascript"})

    return handler


def measure_bertviz_in_browser(
    browser, html: str, heads: int, folder: Path, assets: Path, limit_s: float
) -> dict:
    """Open BertViz's page (CDN URLs answered from ``assets``) and time load -> drawn.

    Drawn = the head view's SVG holds its attention lines and one box per head.
    Returns {"drawn": bool, "draw_ms": float | None, "dom_nodes": int | None}.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page_path = folder / "bertviz.html"
    page_path.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "</head><body>" + html + "</body></html>"
    )
    page, watch = browser.new_page()
    try:
        for url, local in BERTVIZ_CDN.items():
            page.route(url, _serve_bytes((assets / local).read_bytes()))
        started = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="commit", timeout=limit_s * 1000)
        try:
            page.wait_for_function(
                """(heads) => {
                  const root = document.querySelector('[id^="bertviz-"]');
                  if (!root) return false;
                  const lines = root.querySelector('#attention line');
                  const boxes = root.querySelectorAll('svg > g > rect');
                  return !!lines && boxes.length >= heads;
                }""",
                arg=heads,
                timeout=limit_s * 1000,
                polling=250,
            )
        except PlaywrightTimeoutError:
            return {"drawn": False, "draw_ms": None, "dom_nodes": None, "errors": watch.page_errors[:3]}
        draw_ms = (time.perf_counter() - started) * 1000
        nodes = page.evaluate("() => document.getElementsByTagName('*').length")
        return {"drawn": True, "draw_ms": draw_ms, "dom_nodes": nodes, "errors": watch.page_errors[:3]}
    finally:
        page.close()


def bertviz_size_estimate(bytes_per_value: float, layers: int, heads: int, tokens: int) -> float:
    """HTML bytes BertViz's head view would need: it embeds every layer x head x T x T weight as JSON."""
    return bytes_per_value * layers * heads * tokens * tokens


# --------------------------------------------------------------------------------------
# The explorer in JupyterLab, timed in the page
# --------------------------------------------------------------------------------------

# Run cell `index` of the open notebook and resolve with the ms from the run command to the
# moment a new explorer root in that cell's output carries data-finwidget-ready="1".
_RUN_CELL_TO_READY_JS = """
async ([index, limitMs]) => {
  const app = window.jupyterapp;
  let panel = app.shell.currentWidget;
  const notebook = panel.content;
  const cell = notebook.widgets[index];
  const old = cell.node.querySelector('.fw-explorer');
  app.shell.activateById(panel.id);
  notebook.deselectAll();
  notebook.activeCellIndex = index;
  notebook.deselectAll();
  performance.mark('fw-bench:run-cell');
  const t0 = performance.now();
  const ready = new Promise((resolve, reject) => {
    const check = () => {
      const root = cell.node.querySelector('.fw-explorer[data-finwidget-ready="1"]');
      if (root && root !== old) { observer.disconnect(); resolve(performance.now()); return true; }
      return false;
    };
    const observer = new MutationObserver(check);
    observer.observe(cell.node, {subtree: true, childList: true, attributes: true,
                                 attributeFilter: ['data-finwidget-ready']});
    setTimeout(() => { observer.disconnect(); reject(new Error('no draw within ' + limitMs + ' ms')); }, limitMs);
  });
  await app.commands.execute('notebook:run-cell');
  const t1 = await ready;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  performance.mark('fw-bench:first-draw');
  performance.measure('fw-bench:cell-to-first-draw', 'fw-bench:run-cell', 'fw-bench:first-draw');
  return {ready_ms: t1 - t0, painted_ms: performance.now() - t0};
}
"""

# Click grid cell (layer, head) of the explorer in cell `index`; resolve with ms to the redrawn matrix.
_FOCUS_SWITCH_JS = """
async ([index, layer, head, limitMs]) => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const root = notebook.widgets[index].node.querySelector('.fw-explorer');
  root.scrollIntoView({block: 'start'});
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const canvas = root.querySelector('canvas[data-testid=attention-matrix]');
  const before = +canvas.getAttribute('data-draw-count');
  const target = root.querySelector(`[data-testid=head-cell][data-layer="${layer}"][data-head="${head}"]`);
  const done = new Promise((resolve, reject) => {
    const check = () => {
      if (canvas.getAttribute('data-layer') === String(layer) && canvas.getAttribute('data-head') === String(head)
          && +canvas.getAttribute('data-draw-count') > before) { observer.disconnect(); resolve(performance.now()); }
    };
    const observer = new MutationObserver(check);
    observer.observe(canvas, {attributes: true});
    setTimeout(() => { observer.disconnect(); reject(new Error('no redraw within ' + limitMs + ' ms')); }, limitMs);
  });
  performance.mark('fw-bench:focus-click');
  const t0 = performance.now();
  target.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true, view: window}));
  const t1 = await done;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  performance.mark('fw-bench:focus-drawn');
  performance.measure('fw-bench:focus-switch', 'fw-bench:focus-click', 'fw-bench:focus-drawn');
  return {drawn_ms: t1 - t0, painted_ms: performance.now() - t0};
}
"""

# Shift+click grid cell (layer, head); resolve with ms until the prediction panel shows the new answer.
_ABLATION_JS = """
async ([index, layer, head, ablatedAfter, limitMs]) => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const root = notebook.widgets[index].node.querySelector('.fw-explorer');
  root.scrollIntoView({block: 'start'});
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const panel = root.querySelector('[data-testid=prediction-panel]');
  const value = root.querySelector('[data-testid=logit-diff]');
  const cell = root.querySelector(`[data-testid=head-cell][data-layer="${layer}"][data-head="${head}"]`);
  const done = new Promise((resolve, reject) => {
    let seenPending = false;
    const check = () => {
      if (panel.getAttribute('data-pending') === '1') { seenPending = true; return; }
      if (seenPending && (cell.getAttribute('data-ablated') === '1') === ablatedAfter
          && root.getAttribute('data-finwidget-busy') !== '1') {
        observer.disconnect(); resolve(performance.now());
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(root, {attributes: true, subtree: true,
                            attributeFilter: ['data-pending', 'data-value', 'data-ablated', 'data-finwidget-busy']});
    setTimeout(() => { observer.disconnect(); reject(new Error('no answer within ' + limitMs + ' ms')); }, limitMs);
  });
  performance.mark('fw-bench:ablation-click');
  const t0 = performance.now();
  cell.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true, view: window, shiftKey: true}));
  const t1 = await done;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  performance.mark('fw-bench:ablation-shown');
  performance.measure('fw-bench:ablation', 'fw-bench:ablation-click', 'fw-bench:ablation-shown');
  return {shown_ms: t1 - t0, painted_ms: performance.now() - t0, value: parseFloat(value.getAttribute('data-value'))};
}
"""


def _median(values):
    return statistics.median(values) if values else float("nan")


def _fmt_ms(values) -> str:
    if not values:
        return "n/a"
    return f"median {_median(values):7.1f} ms (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


def bench_notebook_cells(lengths: dict[str, int]) -> list[str]:
    """Source of the benchmark notebook: setup, then one explorer per case (cell index = case order)."""
    setup = f"""import sys, json, time
sys.path.insert(0, {str(BENCH_DIR)!r})
import torch
import finwidget
from finwidget.widgets import AttentionExplorer
from bench_widget import random_qwen2_model, statement_of_length, prompt_length
demo, tokenizer = finwidget.load_demo_model()
big = random_qwen2_model(tokenizer)
texts = {{name: statement_of_length(tokenizer, t) for name, t in {lengths!r}.items()}}
build_times = {{}}
print(json.dumps({{name: prompt_length(tokenizer, text) for name, text in texts.items()}}))"""
    return [setup]


CASES = [
    # (name, model variable, text key)
    ("warm-up (demo, T~380)", "demo", "short"),
    ("demo model, T~380", "demo", "short"),
    ("demo model, T~1024", "demo", "t1024"),
    ("28x28 random Qwen2, T~1024", "big", "t1024"),
    ("28x28 random Qwen2, T~2048", "big", "t2048"),
]


#: the long case (``--t4096``): first draw and focus switch at 4,096 tokens
LONG_CASE = ("28x28 random Qwen2, T~4096", "big", "t4096")


def run_browser_benchmark(browser, server, folder: Path, repeats: int, quick: bool, long: bool = False) -> dict:
    from browser_harness import NotebookDriver, output_text, write_notebook

    lengths = {"short": 380, "t1024": 1024, "t2048": 2048}
    cases = CASES[:-1] if quick else CASES
    if long:
        lengths["t4096"] = 4096
        cases = [*cases, LONG_CASE]
    cells = bench_notebook_cells(lengths)
    first_case_cell = len(cells)
    for index, (name, model_var, text_key) in enumerate(cases):
        cells.append(
            "_t0, _c0 = time.perf_counter(), time.process_time()\n"
            f"ex{index} = AttentionExplorer({model_var}, tokenizer, texts[{text_key!r}])\n"
            f"build_times.setdefault({name!r}, []).append("
            "[time.perf_counter() - _t0, time.process_time() - _c0])\n"
            f"ex{index}"
        )
    write_notebook(folder / "bench.ipynb", cells)

    page, watch = browser.new_page()
    results: dict = {"first_draw": {}, "focus": {}, "ablation": {}, "state": {}}
    try:
        driver = NotebookDriver(page, server)
        driver.open(f"{folder.name}/bench.ipynb")
        # run the setup cell (cell 0) and read the real prompt lengths
        driver.activate()
        page.evaluate(
            "() => { const nb = window.jupyterapp.shell.currentWidget.content;"
            " nb.deselectAll(); nb.activeCellIndex = 0; }"
        )
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
        driver.wait_until(
            lambda: page.evaluate(
                "() => !!window.jupyterapp.shell.currentWidget.content.model.cells.get(0)"
                ".executionCount && window.jupyterapp.shell.currentWidget.sessionContext"
                ".session.kernel.status === 'idle'"
            ),
            timeout=600,
            what="the setup cell",
        )
        tokens = json.loads(
            page.evaluate(
                "() => { const c = window.jupyterapp.shell.currentWidget.content.model.cells.get(0);"
                " const outs = []; for (let j = 0; j < c.outputs.length; j++) outs.push(c.outputs.get(j).toJSON());"
                " return outs.filter(o => o.output_type === 'stream').map(o => Array.isArray(o.text) ? o.text.join('') : o.text).join(''); }"
            )
            .strip()
            .splitlines()[-1]
        )
        results["tokens"] = tokens

        for index, (name, model_var, text_key) in enumerate(cases):
            cell_index = first_case_cell + index
            runs = (
                1
                if index == 0
                else (repeats if model_var == "demo" else max(1, repeats - 1 - (text_key in ("t2048", "t4096"))))
            )
            timings = []
            for _ in range(runs):
                timings.append(page.evaluate(_RUN_CELL_TO_READY_JS, [cell_index, 300_000]))
                driver.wait_until(
                    lambda: page.evaluate(
                        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
                    ),
                    timeout=300,
                    what="kernel idle",
                )
            results["first_draw"][name] = [t["painted_ms"] for t in timings]
            print(
                f"  first draw  {name:30s} T={tokens[text_key]:5d}: {_fmt_ms(results['first_draw'][name])}",
                flush=True,
            )

        # focus switches on the 28x28 explorers (and the demo one), different heads each time
        import random

        rng = random.Random(0)
        for index, (name, model_var, text_key) in enumerate(cases):
            if index == 0 or (model_var == "demo" and text_key != "short"):
                continue
            cell_index = first_case_cell + index
            layers, heads = (28, 28) if model_var == "big" else (2, 4)
            times = []
            previous = (0, 0)
            for _ in range(max(5, 3 * repeats)):
                target = previous
                while target == previous:
                    target = (rng.randrange(layers), rng.randrange(heads))
                times.append(
                    page.evaluate(_FOCUS_SWITCH_JS, [cell_index, target[0], target[1], 60_000])["painted_ms"]
                )
                previous = target
            results["focus"][name] = times
            print(f"  focus switch {name:30s}: {_fmt_ms(times)}", flush=True)

        # ablation clicks on the demo explorers: ablate, then restore, each head in turn
        for index, (name, model_var, text_key) in enumerate(cases):
            if index == 0 or model_var != "demo":
                continue
            cell_index = first_case_cell + index
            ablate, restore = [], []
            for head in range(4):
                for layer in range(2):
                    ablate.append(
                        page.evaluate(_ABLATION_JS, [cell_index, layer, head, True, 60_000])["painted_ms"]
                    )
                    restore.append(
                        page.evaluate(_ABLATION_JS, [cell_index, layer, head, False, 60_000])["painted_ms"]
                    )
                if len(ablate) >= 2 * repeats + 2:
                    break
            results["ablation"][name] = ablate + restore
            print(f"  ablation     {name:30s}: {_fmt_ms(ablate + restore)}", flush=True)

        # saved widget state (what a notebook save / HTML embed stores) per explorer
        sizes = json.loads(
            output_text(
                driver.append_and_run(
                    "from ipywidgets.embed import dependency_state, embed_data\n"
                    "_sizes = {}\n"
                    + "".join(
                        f"_sizes[{name!r}] = [ex{index}.state_size(), len(json.dumps(embed_data(views=[ex{index}], "
                        f"state=dependency_state([ex{index}], drop_defaults=False))['manager_state']))]\n"
                        for index, (name, _, _) in enumerate(cases)
                        if index > 0
                    )
                    + "print(json.dumps(_sizes))",
                    timeout=300,
                )
            )
            .strip()
            .splitlines()[-1]
        )
        results["state"] = sizes
        results["build"] = json.loads(
            output_text(driver.append_and_run("print(json.dumps(build_times))")).strip().splitlines()[-1]
        )
        results["page_problems"] = watch.console_errors + watch.page_errors
        page.screenshot(path=str(folder / "bench-last.png"))
    finally:
        page.close()
    return results


def run_bertviz(browser, folder: Path, assets: Path, limit_s: float) -> dict:
    """BertViz head view on the demo model's attention at T ~ 256 and ~ 512, in the same browser."""
    from finwidget import load_demo_model

    model, tokenizer = load_demo_model()
    out = {}
    for target in (256, 512):
        text = statement_of_length(tokenizer, target)
        tokens = prompt_length(tokenizer, text)
        html, forward_s, python_s = bertviz_html(model, tokenizer, text)
        drawn = measure_bertviz_in_browser(
            browser, html, model.config.num_attention_heads, folder, assets, limit_s
        )
        layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
        out[target] = {
            "tokens": tokens,
            "html_bytes": len(html.encode()),
            "forward_s": forward_s,
            "python_s": python_s,
            "bytes_per_value": len(html.encode()) / (layers * heads * tokens * tokens),
            **drawn,
        }
        print(
            f"  BertViz demo T={tokens}: HTML {len(html.encode()) / 1e6:.1f} MB, python {python_s:.2f} s, "
            + (
                f"drawn in {drawn['draw_ms'] / 1000:.2f} s ({drawn['dom_nodes']} DOM nodes)"
                if drawn["drawn"]
                else f"NOT drawn within {limit_s:.0f} s"
            ),
            flush=True,
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no T = 2048 case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bertviz-assets", type=Path, default=DEFAULT_ASSETS)
    parser.add_argument("--bertviz-limit", type=float, default=75.0, help="seconds BertViz may take to draw")
    parser.add_argument("--no-bertviz", action="store_true")
    parser.add_argument("--t4096", action="store_true",
                        help="also the 28x28 model at T~4096 (first draw and focus switch; slow on a CPU)")
    args = parser.parse_args(argv)

    from browser_harness import BrowserSession, JupyterServer, chromium_or_skip  # noqa: F401

    if not os.access("/usr/bin/chromium", os.X_OK):
        print("bench_widget: /usr/bin/chromium is missing (sudo apt-get install chromium)")
        return 1
    repeats = 2 if args.quick else args.repeats
    print(
        f"bench_widget: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, headless Chromium, JupyterLab 4"
    )
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        tmp = Path(tmp)
        server = JupyterServer("lab", tmp / "root", tmp / "state")
        browser = None
        try:
            server.start()
            browser = BrowserSession(tmp / "chromium-profile")
            folder = tmp / "root" / "bench"
            folder.mkdir(parents=True)
            results = run_browser_benchmark(browser, server, folder, repeats, args.quick, long=args.t4096)
            bertviz_results = {}
            if not args.no_bertviz:
                import importlib.util

                missing = [p for p in BERTVIZ_CDN.values() if not (args.bertviz_assets / p).is_file()]
                if importlib.util.find_spec("bertviz") is None:
                    print("  BertViz not run: `pip install bertviz` to compare")
                elif missing:
                    print(
                        f"  BertViz not run: local copies of its CDN scripts missing under {args.bertviz_assets}"
                        " (npm install --prefix DIR d3@5.7.0 jquery@2.2.4 requirejs)"
                    )
                else:
                    bertviz_results = run_bertviz(browser, tmp, args.bertviz_assets, args.bertviz_limit)
        finally:
            if browser is not None:
                browser.close()
            server.stop()
    print_summary(results, bertviz_results)
    return 0


def print_summary(results: dict, bertviz: dict) -> None:
    tokens = results["tokens"]
    print("\nSummary (browser timings from performance marks; ratio = measured / target)")
    print(f"  prompt lengths: {tokens}")
    build = results.get("build", {})
    for name, values in results["first_draw"].items():
        builds = build.get(name, [])
        wall = _median([b[0] * 1000 for b in builds])
        cpu = _median([b[1] * 1000 for b in builds])
        split = (
            (
                f"  (of which AttentionExplorer(...) in the kernel: wall {wall:.0f} ms, cpu {cpu:.0f} ms;"
                f" the rest, messages + drawing: {_median(values) - wall:.0f} ms)"
            )
            if builds
            else ""
        )
        if name.startswith("warm-up"):
            print(f"  first draw (cold page, bundle load) {name}: {values[0]:.0f} ms{split}")
            continue
        print(
            f"  first draw  {name:30s} {_median(values):8.0f} ms  target {TARGETS_MS['first_draw']:.0f} ms"
            f"  ratio {_median(values) / TARGETS_MS['first_draw']:.2f}{split}"
        )
    for name, values in results["focus"].items():
        print(
            f"  focus switch {name:29s} {_median(values):8.1f} ms  target {TARGETS_MS['focus_switch']:.0f} ms"
            f"  ratio {_median(values) / TARGETS_MS['focus_switch']:.2f}"
        )
    for name, values in results["ablation"].items():
        print(
            f"  ablation    {name:30s} {_median(values):8.1f} ms  target {TARGETS_MS['ablation']:.0f} ms"
            f"  ratio {_median(values) / TARGETS_MS['ablation']:.2f}"
        )
    for name, (own, embedded) in results["state"].items():
        print(
            f"  saved state {name:30s} {own / 1e6:8.3f} MB traits, {embedded / 1e6:.3f} MB as ipywidgets.embed stores it"
            f"  target {TARGET_STATE_BYTES / 2**20:.0f} MiB  ratio {own / TARGET_STATE_BYTES:.3f}"
        )
    if results.get("page_problems"):
        print(f"  page errors during the run: {results['page_problems'][:5]}")
    if bertviz:
        per_value = statistics.mean(v["bytes_per_value"] for v in bertviz.values())
        for v in bertviz.values():
            drawn = f"{v['draw_ms']:.0f} ms to draw" if v["drawn"] else "not drawn in the time limit"
            print(
                f"  BertViz head view, demo model T={v['tokens']}: {v['html_bytes'] / 1e6:.1f} MB HTML,"
                f" {v['python_s']:.2f} s in Python, {drawn}"
                + (f", {v['dom_nodes']} DOM nodes" if v["drawn"] else "")
            )
        for t in (256, 512, 1024):
            estimate = bertviz_size_estimate(per_value, 28, 28, t)
            print(
                f"  BertViz head view, 28x28 model T={t}: would embed ~{estimate / 1e9:.2f} GB of HTML"
                f" (estimate: {per_value:.1f} bytes per weight as measured above x 28 x 28 x T^2; not run)"
            )


if __name__ == "__main__":
    sys.exit(main())
