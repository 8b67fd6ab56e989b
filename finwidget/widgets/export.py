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


def embedded_replies(explorer, heads: str = "focus") -> list[dict]:
    """The replies an exported page needs for the explorer's current state, keyed by request.

    ``heads="layer"`` also embeds the matrix of every head of the focused layer, so a
    reader can click through that layer's heads offline (about ``H x T^2 / 2`` bytes).
    """
    if heads not in ("focus", "layer"):
        raise InputError(f"heads must be 'focus' or 'layer', got {heads!r}")
    state = {name: getattr(explorer, name) for name in SYNCED_STATE}
    requests = requests_for_state(state)
    if heads == "layer" and "matrix" in state["views"]:
        layer = state["focus"]["layer"]
        for head in range(explorer.session.num_heads):
            if head != state["focus"]["head"]:
                requests.append({"kind": "head_matrix", "layer": layer, "head": head})
    if "grid" in state["views"]:
        # Every measure that can be computed, so the measure menu still works offline.
        current = {request_key(r) for r in requests}
        selection = selection_param(state["selection"])
        for measure in grid_measures():
            extra = grid_request(measure, selection)
            if request_key(extra) not in current:
                requests.append(extra)
    out = []
    for request in requests:
        reply, buffers = explorer.handle_request({**request, "id": 0})
        if not reply.get("ok"):
            continue
        out.append(
            {
                "key": request_key(request),
                "reply": reply,
                "buffers": [base64.b64encode(bytes(b)).decode("ascii") for b in buffers],
            }
        )
    return out


def save_explorer_html(explorer, path, title: str | None = None, heads: str = "focus") -> Path:
    """Write ``explorer`` as a standalone HTML page at ``path``; returns the path.

    ``heads``: "focus" embeds the focused head's matrix, "layer" every head of its layer.
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
        "replies": embedded_replies(explorer, heads),
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
