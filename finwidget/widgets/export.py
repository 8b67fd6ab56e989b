"""Standalone HTML export of an explorer: one file, works offline (no CDN, no kernel).

The page inlines the frontend bundle and CSS, the widget's traits and the replies to the
data requests its current state makes (see ``requests_for_state``); the frontend's
``mountStatic`` draws it with a stand-in model that answers from those replies.

Everything embedded is JSON inside ``<script type="application/json">`` with ``<``, ``>``,
``&``, U+2028 and U+2029 escaped as ``\\uXXXX``, so no statement text (``</script>``,
``<!--``, ...) can end the script element or be read as markup.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from finwidget.errors import InputError
from finwidget.widgets.protocol import (
    SYNCED_STATE,
    grid_measures,
    grid_request,
    request_key,
    requests_for_state,
    selection_param,
    strict_json_content,
)

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value) -> str:
    """JSON safe to place inside a ``<script>`` element (and parseable by ``JSON.parse``); strict:
    a non-finite float is written as ``null`` (:func:`~finwidget.widgets.protocol.strict_json_content`)."""
    text = json.dumps(strict_json_content(value), ensure_ascii=False, allow_nan=False)
    for raw, escaped in _ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


#: what ``heads="all"`` embeds at most by default (bytes of replies, before base64)
DEFAULT_MAX_EMBEDDED_BYTES = 32 * 2**20


def _focus_requests(state: dict, layer: int, head: int) -> list[dict]:
    """The requests that depend on the focused head, for focus (layer, head)."""
    moved = {**state, "focus": {"layer": layer, "head": head}}
    return [r for r in requests_for_state(moved) if r["kind"] in ("head_matrix", "token_values")]


def embedded_replies(explorer, heads: str = "focus", max_bytes: int = DEFAULT_MAX_EMBEDDED_BYTES,
                     report: dict | None = None) -> list[dict]:
    """The replies an exported page needs for the explorer's current state, keyed by request.

    ``heads="layer"`` also embeds the matrix of every head of the focused layer, so a
    reader can click through that layer's heads offline (about ``H x T^2 / 2`` bytes).
    ``heads="all"`` embeds what focusing any head needs (its matrix and statement
    values), layer by layer, until the replies reach ``max_bytes``; ``report`` (a dict)
    receives ``{"heads_embedded", "heads_total", "bytes", "max_bytes"}``.
    """
    if heads not in ("focus", "layer", "all"):
        raise InputError(f"heads must be 'focus', 'layer' or 'all', got {heads!r}")
    state = {name: getattr(explorer, name) for name in SYNCED_STATE}
    requests = requests_for_state(state)
    if (state.get("what_if_state") or {}).get("edits"):
        # the "colour by difference" switch works offline both ways
        flipped = {**state, "what_if_difference": not state.get("what_if_difference")}
        seen = {request_key(r) for r in requests}
        requests += [r for r in requests_for_state(flipped) if request_key(r) not in seen]
    if heads == "layer" and "matrix" in state["views"]:
        layer = state["focus"]["layer"]
        for head in range(explorer.session.num_heads):
            if head != state["focus"]["head"]:
                requests.append({"kind": "head_matrix", "layer": layer, "head": head})
    per_head: list[tuple[tuple[int, int], list[dict]]] = []
    if heads == "all":
        focus = (state["focus"]["layer"], state["focus"]["head"])
        for layer in range(explorer.session.num_layers):
            for head in range(explorer.session.num_heads):
                if (layer, head) != focus:
                    per_head.append(((layer, head), _focus_requests(state, layer, head)))
    if "grid" in state["views"]:
        # Every measure that can be computed, so the measure menu still works offline.
        current = {request_key(r) for r in requests}
        selection = selection_param(state["selection"])
        for measure in grid_measures():
            extra = grid_request(measure, selection, state["direction"])
            if request_key(extra) not in current:
                requests.append(extra)
    out: list[dict] = []
    size = 0

    def embed(request) -> int:
        reply, buffers = explorer.handle_request({**request, "id": 0})
        if not reply.get("ok"):
            return 0
        out.append(
            {
                "key": request_key(request),
                "reply": reply,
                "buffers": [base64.b64encode(bytes(b)).decode("ascii") for b in buffers],
            }
        )
        return sum(len(bytes(b)) for b in buffers) + len(json.dumps(reply, default=str))

    for request in requests:
        size += embed(request)
    embedded = 1
    for _, head_requests in per_head:
        if size >= max_bytes:
            break
        for request in head_requests:
            size += embed(request)
        embedded += 1
    if report is not None:
        report.update(
            heads_embedded=embedded if heads == "all" else (explorer.session.num_heads if heads == "layer" else 1),
            heads_total=explorer.session.num_layers * explorer.session.num_heads,
            bytes=size,
            max_bytes=max_bytes,
        )
    return out


def save_explorer_html(explorer, path, title: str | None = None, heads: str = "focus",
                       before_html: str = "", max_bytes: int = DEFAULT_MAX_EMBEDDED_BYTES,
                       report: dict | None = None, replies: list | None = None) -> Path:
    """Write ``explorer`` as a standalone HTML page at ``path``; returns the path.

    ``heads``: "focus" embeds the focused head's matrix, "layer" every head of its layer,
    "all" every head (up to ``max_bytes`` of replies; ``report`` receives what was embedded).
    ``before_html``: trusted markup placed above the explorer (the analysis report's
    sections; its text must already be escaped). ``replies``: :func:`embedded_replies`
    already computed (else computed here).
    """
    from finwidget.widgets.explorer import STATIC

    bundle_path, css_path = STATIC / "widget.js", STATIC / "widget.css"
    if not bundle_path.exists():
        raise InputError(
            "finwidget's frontend is not built (finwidget/static/widget.js is missing): "
            "run `npm run build` in the repository first"
        )
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"save_html writes an .html file, got {str(path)!r}")
    state = {
        "traits": {name: getattr(explorer, name) for name in SYNCED_STATE},
        "replies": replies if replies is not None else embedded_replies(
            explorer, heads, max_bytes=max_bytes, report=report
        ),
    }
    css = css_path.read_text(encoding="utf-8") if css_path.exists() else ""
    safe_css = css.replace("</", "<\\/")
    page_title = title or f"finwidget explorer · {explorer.geometry.get('model_name', '')}"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(page_title)}</title>
<link rel="icon" href="data:,">
<style>{safe_css}</style>
</head>
<body>
{before_html}
<div id="fw-export-root" class="fw-export"></div>
<script type="application/json" id="fw-bundle">{script_json(bundle_path.read_text(encoding="utf-8"))}</script>
<script type="application/json" id="fw-state">{script_json(state)}</script>
<script type="module">
const read = (id) => JSON.parse(document.getElementById(id).textContent);
const url = URL.createObjectURL(new Blob([read("fw-bundle")], {{ type: "text/javascript" }}));
const bundle = await import(url);
URL.revokeObjectURL(url);
bundle.mountStatic(document.getElementById("fw-export-root"), read("fw-state"));
</script>
</body>
</html>
"""
    path.write_text(page, encoding="utf-8")
    return path
