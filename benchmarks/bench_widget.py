"""Browser timings of the explorer widget, side by side with BertViz's head view.

Run:  .venv/bin/python benchmarks/bench_widget.py            (full run, a few minutes)
      .venv/bin/python benchmarks/bench_widget.py --quick    (fewer repeats, no 2048)

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


def random_qwen2_model(tokenizer, layers: int = 28, heads: int = 28, kv_heads: int = 4, head_dim: int = 16,
                       seed: int = 0, max_positions: int = 4096):
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


def measure_bertviz_in_browser(browser, html: str, heads: int, folder: Path, assets: Path,
                               limit_s: float) -> dict:
    """Open BertViz's page (CDN URLs answered from ``assets``) and time load -> drawn.

    Drawn = the head view's SVG holds its attention lines and one box per head.
    Returns {"drawn": bool, "draw_ms": float | None, "dom_nodes": int | None}.
    """
    page_path = folder / "bertviz.html"
    page_path.write_text('<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
                         "</head><body>" + html + "</body></html>")
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
        except Exception:
            return {"drawn": False, "draw_ms": None, "dom_nodes": None, "errors": watch.page_errors[:3]}
        draw_ms = (time.perf_counter() - started) * 1000
        nodes = page.evaluate("() => document.getElementsByTagName('*').length")
        return {"drawn": True, "draw_ms": draw_ms, "dom_nodes": nodes, "errors": watch.page_errors[:3]}
    finally:
        page.close()
