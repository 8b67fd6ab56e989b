"""The explorer widget: linked statement, layer x head grid, attention matrix, layer flow
and prediction views of one statement, with head ablation from the UI.

Small state is in traitlets (saved with the notebook, linkable with ``ipywidgets.link``);
big data (attention of the focused head, per-head summaries, the flow) goes to the
frontend as binary custom messages when a view asks for it (see
:mod:`finwidget.widgets.protocol`).
"""

from __future__ import annotations

import base64
import math
import traceback
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from finwidget.errors import InputError
from finwidget.widgets.protocol import (
    ABLATION_MODES,
    DIRECTIONS,
    GRID_MEASURES,
    MATRIX_AGGREGATES,
    PNG_PREFIX,
    STATEMENT_HEADS,
    VIEW_NAMES,
    Geometry,
    Payload,
    ProtocolError,
    Request,
    error_reply,
    ok_reply,
    parse_request,
    progress_message,
    selection_param,
    validate_ablations,
)
from finwidget.widgets.session import ExplorerSession

STATIC = Path(__file__).resolve().parent.parent / "static"

DEFAULT_SETTINGS = {
    "statement_heads": "focus",
    "matrix_aggregate": "tokens",
    "ablate_mode": "zero",
    "scale_value": 0.0,
    "reply_timeout_ms": 8000,
}


def _bundle(name: str) -> Path | str:
    path = STATIC / name
    if path.exists():
        return path
    # A source checkout without `npm run build`: say so in the page rather than fail to import.
    if name.endswith(".js"):
        message = (
            "finwidget's frontend is not built: run `npm run build` (or `make frontend`) in the repository"
        )
        return f"export default {{ render({{ el }}) {{ el.textContent = {message!r}; }} }};"
    return ""


def layout_state(session: ExplorerSession) -> dict:
    """The statement layout as the frontend's ``statement_layout`` trait (JSON; spans, lines, tokens)."""
    layout = session.layout
    tokens = []
    for t in range(layout.num_tokens):
        text = layout.token_text(t)
        if not text:
            text = session.tokenizer.decode([layout.input_ids[t]])
        tokens.append(text)
    spans = []
    for s in layout.spans:
        value = s.value if s.value is None or math.isfinite(s.value) else None
        spans.append(
            {
                "index": s.index,
                "kind": s.kind,
                "text": s.text,
                "char_start": s.char_start,
                "char_end": s.char_end,
                "token_start": s.token_start,
                "token_end": s.token_end,
                "line": s.line,
                "category": s.category,
                "value": value,
                "year": s.year,
                "line_item": s.line_item,
                "in_statement": bool(s.in_statement),
            }
        )
    return {
        "text": layout.text,
        "tokens": tokens,
        "token_to_span": [int(v) for v in layout.token_to_span],
        "spans": spans,
        "lines": [list(map(int, line)) for line in layout.lines],
        "line_items": [
            {
                "name": li.name,
                "line": li.line,
                "name_span": li.name_span,
                "number_spans": list(li.number_spans),
                "category": li.category,
            }
            for li in layout.line_items
        ],
        "answer_position": session.answer_position,
    }


class AttentionExplorer(anywidget.AnyWidget):
    """Explore what every head of every layer does on a financial statement.

    Args:
        model: a Hugging Face causal LM (e.g. Qwen2-7B, or ``finwidget.load_demo_model()``).
        tokenizer: its (fast) tokenizer.
        text: the statement; the task adds the question and the answer prefix.
        task: an :class:`~finwidget.task.EarningsTask` (default ``EarningsTask(tokenizer)``).
        views: which views to show, any of ``"prediction", "statement", "grid", "matrix",
            "flow"`` (default: all).
        focus: ``(layer, head)`` to focus first (default: layer 0, head 0).
        selection: ``(start, end)`` span range to select first (default: none).
        reference: statements whose mean head outputs the "mean" ablation uses
            (default: this statement, averaged over its tokens).
        truncate: drop tokens from the start of a statement longer than the context.

    Traits (read and set them from Python; ``ipywidgets.link`` works on them):
        focus: ``{"layer", "head"}``; selection: ``{"start", "end"}`` span range or ``{}``;
        direction: ``"from" | "to"``; grid_measure; layer_range: ``[]`` or ``[first, last]``;
        ablations: ``[{"layer", "head", "mode"[, "value"]}]``; settings; prediction
        (``{"clean", "ablated", "flipped"}``, read only); views.
    """

    _esm = _bundle("widget.js")
    _css = _bundle("widget.css")

    statement_layout = traitlets.Dict().tag(sync=True)
    geometry = traitlets.Dict().tag(sync=True)
    focus = traitlets.Dict({"layer": 0, "head": 0}).tag(sync=True)
    selection = traitlets.Dict({}).tag(sync=True)
    direction = traitlets.Unicode("from").tag(sync=True)
    grid_measure = traitlets.Unicode("attention_to_selection").tag(sync=True)
    layer_range = traitlets.List([]).tag(sync=True)
    ablations = traitlets.List([]).tag(sync=True)
    settings = traitlets.Dict(dict(DEFAULT_SETTINGS)).tag(sync=True)
    prediction = traitlets.Dict({}).tag(sync=True)
    views = traitlets.List(list(VIEW_NAMES)).tag(sync=True)
    sweep_done = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        model,
        tokenizer,
        text: str,
        task=None,
        *,
        views=None,
        focus=None,
        selection=None,
        reference=None,
        truncate: bool = False,
        session: ExplorerSession | None = None,
        **kwargs,
    ):
        unknown = set(kwargs) - {
            "statement_layout",
            "geometry",
            "direction",
            "grid_measure",
            "layer_range",
            "settings",
        }
        if unknown:
            raise InputError(f"AttentionExplorer got unknown keyword arguments {sorted(unknown)}")
        if views is not None:
            bad = [views] if isinstance(views, str) else [v for v in views if v not in VIEW_NAMES]
            if bad or not views:
                raise InputError(f"views must be a non-empty list of {list(VIEW_NAMES)}, got {views!r}")
        if session is None and model is None:
            raise InputError(
                "AttentionExplorer needs a model (or use AttentionExplorer.from_attention for "
                "attention recorded without one)"
            )
        self.session = (
            session
            if session is not None
            else ExplorerSession(model, tokenizer, text, task=task, reference=reference, truncate=truncate)
        )
        s = self.session
        self._geometry = Geometry(
            num_layers=s.num_layers, num_heads=s.num_heads, num_spans=s.layout.num_spans
        )
        self.last_png: bytes | None = None
        self.last_png_view: str | None = None
        if model is None:
            model_name = getattr(s, "model_name", "recorded attention")
        else:
            model_name = _model_name(model)
        kwargs.setdefault("statement_layout", layout_state(s))
        kwargs.setdefault(
            "geometry",
            {
                "num_layers": s.num_layers,
                "num_heads": s.num_heads,
                "num_kv_heads": s.num_kv_heads,
                "head_dim": s.head_dim,
                "seq_len": s.seq_len,
                "model_name": str(model_name).split("/")[-1],
            },
        )
        super().__init__(**kwargs)
        if views is not None:
            self.views = list(views)
        if focus is not None:
            layer, head = focus
            self.focus = {"layer": layer, "head": head}
        if selection is not None:
            start, end = selection
            self.selection = {"start": start, "end": end}
        self.prediction = s.prediction([])
        self.on_msg(self._on_custom_message)

    @classmethod
    def from_attention(
        cls,
        attention,
        layout,
        prediction=None,
        *,
        views=None,
        focus=None,
        selection=None,
        model_name: str = "recorded attention",
        **kwargs,
    ) -> AttentionExplorer:
        """An explorer of attention already recorded, without the model (nothing to ablate).

        ``attention``: a capture, ``hook.attention_weights``, ``{'layer_i': [B, H, T, T]}`` or an
        ``output_attentions`` tuple; ``layout``: ``read_statement`` of the same tokens;
        ``prediction``: the model's :class:`~finwidget.task.Prediction`, if known.
        """
        session = ExplorerSession.from_attention(
            attention, layout, prediction=prediction, model_name=model_name
        )
        if views is None:
            views = [v for v in VIEW_NAMES if v != "prediction" or prediction is not None]
        return cls(
            None, None, layout.text, views=views, focus=focus, selection=selection, session=session, **kwargs
        )

    # ------------------------------------------------------------------ validation of traits
    @traitlets.validate("focus")
    def _valid_focus(self, proposal):
        value = proposal["value"]
        if set(value) != {"layer", "head"}:
            raise traitlets.TraitError(f"focus must be {{'layer': int, 'head': int}}, got {value!r}")
        try:
            parse_request({"kind": "head_matrix", "id": 0, **value}, self._geometry)
        except ProtocolError as err:
            raise traitlets.TraitError(f"focus: {err}") from None
        return {"layer": value["layer"], "head": value["head"]}

    @traitlets.validate("selection")
    def _valid_selection(self, proposal):
        value = proposal["value"]
        if not value:
            return {}
        if set(value) != {"start", "end"}:
            raise traitlets.TraitError(
                f"selection must be {{}} or {{'start': int, 'end': int}}, got {value!r}"
            )
        try:
            parse_request(
                {"kind": "flow", "id": 0, "selection": [value["start"], value["end"]]}, self._geometry
            )
        except ProtocolError as err:
            raise traitlets.TraitError(
                f"selection (span indices, {self._geometry.num_spans} spans): {err}"
            ) from None
        return {"start": value["start"], "end": value["end"]}

    @traitlets.validate("direction")
    def _valid_direction(self, proposal):
        if proposal["value"] not in DIRECTIONS:
            raise traitlets.TraitError(f"direction must be one of {DIRECTIONS}, got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("grid_measure")
    def _valid_measure(self, proposal):
        if proposal["value"] not in GRID_MEASURES:
            raise traitlets.TraitError(
                f"grid_measure must be one of {GRID_MEASURES}, got {proposal['value']!r}"
            )
        return proposal["value"]

    @traitlets.validate("layer_range")
    def _valid_layer_range(self, proposal):
        value = list(proposal["value"])
        if not value:
            return []
        try:
            parse_request(
                {
                    "kind": "token_values",
                    "id": 0,
                    "scope": "range",
                    "selection": [],
                    "direction": "from",
                    "layer_range": value,
                },
                self._geometry,
            )
        except ProtocolError as err:
            raise traitlets.TraitError(str(err)) from None
        return value

    @traitlets.validate("ablations")
    def _valid_ablations(self, proposal):
        try:
            return validate_ablations(proposal["value"], self._geometry)
        except ProtocolError as err:
            raise traitlets.TraitError(f"ablations: {err}") from None

    @traitlets.validate("views")
    def _valid_views(self, proposal):
        value = list(proposal["value"])
        bad = [v for v in value if v not in VIEW_NAMES]
        if bad or not value:
            raise traitlets.TraitError(f"views must be a non-empty list of {VIEW_NAMES}, got {value!r}")
        return list(dict.fromkeys(value))

    @traitlets.validate("settings")
    def _valid_settings(self, proposal):
        value = {**DEFAULT_SETTINGS, **proposal["value"]}
        unknown = set(value) - set(DEFAULT_SETTINGS)
        checks = {
            "statement_heads": STATEMENT_HEADS,
            "matrix_aggregate": MATRIX_AGGREGATES,
            "ablate_mode": ABLATION_MODES,
        }
        if unknown:
            raise traitlets.TraitError(
                f"unknown settings {sorted(unknown)}; known: {sorted(DEFAULT_SETTINGS)}"
            )
        for key, options in checks.items():
            if value[key] not in options:
                raise traitlets.TraitError(f"settings[{key!r}] must be one of {options}, got {value[key]!r}")
        for key in ("scale_value", "reply_timeout_ms"):
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise traitlets.TraitError(f"settings[{key!r}] must be a finite number, got {v!r}")
        if value["reply_timeout_ms"] < 100:
            raise traitlets.TraitError("settings['reply_timeout_ms'] must be at least 100")
        return value

    @traitlets.observe("ablations")
    def _ablations_changed(self, change):
        self.prediction = self.session.prediction(change["new"])

    # ------------------------------------------------------------------ Python API
    def ablate(self, layer: int, head: int, mode: str = "zero", value: float | None = None) -> dict:
        """Ablate one more head (as a click in the grid does); returns the new prediction."""
        entry = {"layer": layer, "head": head, "mode": mode}
        if value is not None:
            entry["value"] = value
        rest = [a for a in self.ablations if (a["layer"], a["head"]) != (layer, head)]
        self.ablations = rest + [entry]
        return self.prediction

    def restore(self, layer: int, head: int) -> dict:
        """Restore one head; returns the new prediction."""
        self.ablations = [a for a in self.ablations if (a["layer"], a["head"]) != (layer, head)]
        return self.prediction

    def reset(self) -> dict:
        """Restore every head."""
        self.ablations = []
        return self.prediction

    def select(self, what) -> dict:
        """Select spans for every view: ``(start, end)`` span indices, a line item's name
        (its whole row: name and numbers), or text as written in the statement (the
        spans covering its first occurrence). ``None`` clears. Returns the selection."""
        layout = self.session.layout
        if what is None:
            self.selection = {}
            return self.selection
        if isinstance(what, (tuple, list)):
            start, end = what
            self.selection = {"start": start, "end": end}
            return self.selection
        if not isinstance(what, str) or not what.strip():
            raise InputError(f"select() takes (start, end), a line item name or text, got {what!r}")
        for item in layout.line_items:
            if item.name.lower() == what.strip().lower():
                last = max([item.name_span, *item.number_spans])
                self.selection = {"start": item.name_span, "end": last + 1}
                return self.selection
        at = layout.text.find(what)
        if at < 0:
            names = ", ".join(repr(i.name) for i in layout.line_items[:12])
            raise InputError(f"{what!r} is neither a line item ({names}, ...) nor text of the statement")
        covered = [sp.index for sp in layout.spans if sp.char_end > at and sp.char_start < at + len(what)]
        if not covered:
            raise InputError(f"{what!r} covers no span of the statement (only spaces?)")
        self.selection = {"start": min(covered), "end": max(covered) + 1}
        return self.selection

    @property
    def intervention_set(self):
        """The current ablations as an :class:`~finwidget.interventions.spec.InterventionSet`."""
        return self.session.intervention_set(self.ablations)

    def sweep(self, mode: str = "zero", value: float | None = None, progress=None, layers=None):
        """Ablate every head alone; colour the grid by the change in logit difference.

        ``layers``: only the heads of these layers (e.g. ``range(20, 28)``), NaN elsewhere.
        Returns a pandas DataFrame (layer, head, mode, logit_diff, change, flipped) of the
        heads swept.
        """
        import pandas as pd

        if mode not in ABLATION_MODES:
            raise InputError(f"mode must be one of {ABLATION_MODES}, got {mode!r}")
        if layers is not None:
            layers = list(layers)
            bad = [
                lay for lay in layers if not isinstance(lay, int) or not 0 <= lay < self.session.num_layers
            ]
            if bad or not layers:
                raise InputError(
                    f"layers must be a non-empty list of layer indices 0..{self.session.num_layers - 1}, got {layers!r}"
                )
        effect = self.session.sweep(mode, value, progress=progress, layers=layers)
        self.sweep_done = False
        self.sweep_done = True
        self.grid_measure = "ablation_effect"
        clean = self.session.clean.logit_diff
        rows = []
        for layer in range(effect.shape[0]):
            for head in range(effect.shape[1]):
                if np.isnan(effect[layer, head]):
                    continue
                diff = clean + float(effect[layer, head])
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "mode": mode,
                        "logit_diff": diff,
                        "change": float(effect[layer, head]),
                        "flipped": (diff > 0) != (clean > 0),
                    }
                )
        return pd.DataFrame(rows)

    def state_size(self) -> int:
        """Bytes of this widget's synced state as saved in a notebook (JSON of every synced trait)."""
        import json

        state = self.get_state()
        return len(json.dumps(state, default=str).encode("utf-8"))

    def save_html(self, path, title: str | None = None, heads: str = "focus") -> Path:
        """Write a standalone page (works offline, no CDN) showing the current state.

        ``heads="layer"`` also embeds every head of the focused layer's matrix, so the page
        can switch between them without a kernel.
        """
        from finwidget.widgets.export import save_explorer_html

        return save_explorer_html(self, path, title=title, heads=heads)

    # ------------------------------------------------------------------ messages
    def handle_request(self, content, buffers=None, send_progress=None) -> tuple[dict, list]:
        """Answer one request from the frontend: ``(reply content, reply buffers)``.

        Never raises: a malformed request or a failure inside gets an error reply.
        """
        message_id = content.get("id") if isinstance(content, dict) else None
        kind = content.get("kind") if isinstance(content, dict) else None
        try:
            request = parse_request(content, self._geometry)
        except ProtocolError as err:
            return error_reply(message_id, kind, f"bad request: {err}")
        try:
            return self._answer(request, send_progress)
        except InputError as err:
            return error_reply(request.id, request.kind, str(err))
        except Exception as err:  # noqa: BLE001 - a failure must reach the UI, not kill the widget
            detail = traceback.format_exception_only(type(err), err)[-1].strip()
            return error_reply(
                request.id, request.kind, f"the kernel failed to answer {request.kind}: {detail}"
            )

    def _on_custom_message(self, _widget, content, buffers):
        def send_progress(done, total, message=""):
            self.send(progress_message(content["id"], done, total, message))

        reply, reply_buffers = self.handle_request(content, buffers, send_progress)
        self.send(reply, reply_buffers)

    def _answer(self, request: Request, send_progress=None) -> tuple[dict, list]:
        s = self.session
        p = request.params
        if request.kind == "head_matrix":
            payload = Payload()
            payload.add_causal_matrix("matrix", s.head_matrix(p["layer"], p["head"]), p["encoding"])
            return ok_reply(request, {"layer": p["layer"], "head": p["head"]}, payload)
        if request.kind == "token_values":
            values, reduce, label = s.token_values(
                p["scope"],
                p["selection"],
                p["direction"],
                p.get("layer"),
                p.get("head"),
                p.get("layer_range"),
            )
            payload = Payload()
            payload.add_f16("values", values)
            return ok_reply(request, {"reduce": reduce, "label": label}, payload)
        if request.kind == "grid":
            return ok_reply(request, *self._grid_fields(p["measure"], p["selection"]))
        if request.kind == "flow":
            flow = s.flow(p["selection"])
            payload = Payload()
            payload.add_f16("spread", flow["spread"])
            fields = {
                "selection_mass": flow["selection_mass"],
                "logit_lens": flow["logit_lens"],
                "label": flow["label"],
            }
            return ok_reply(request, fields, payload)
        if request.kind == "set_ablations":
            prediction = s.prediction(p["ablations"])
            self.ablations = p["ablations"]  # the observer finds the prediction cached
            fields = {"prediction": prediction, "ablations": p["ablations"]}
            payload = None
            if "grid" in p:
                grid_fields, payload = self._grid_fields(p["grid"], selection_param(self.selection))
                fields.update(grid_fields)
            return ok_reply(request, fields, payload)
        if request.kind == "sweep":
            layers = None
            if p.get("layer_range"):
                first, last = p["layer_range"]
                layers = list(range(first, last + 1))
            total = (len(layers) if layers else s.num_layers) * s.num_heads
            step = max(1, total // 50)

            def progress(done, total_):
                if send_progress is not None and (done % step == 0 or done == total_):
                    send_progress(done, total_, "heads ablated")

            self.sweep(p["mode"], p.get("value"), progress=progress, layers=layers)
            return ok_reply(request, *self._grid_fields("ablation_effect", []))
        if request.kind == "png":
            self.last_png = base64.b64decode(p["data_url"][len(PNG_PREFIX) :], validate=False)
            self.last_png_view = p["view"]
            return ok_reply(request, {"bytes": len(self.last_png)})
        raise ProtocolError(f"unhandled request kind {request.kind!r}")

    def _grid_fields(self, measure: str, selection: list[int]) -> tuple[dict, Payload]:
        values, label = self.session.grid(measure, selection)
        payload = Payload()
        payload.add_f16("values", np.asarray(values, dtype=np.float32).reshape(-1))
        return {"measure": measure, "label": label}, payload


def _model_name(model) -> str:
    """What the toolbar calls the model: its hub id or folder, the demo model by name."""
    from pathlib import Path

    from finwidget.demo import MODEL_DIR

    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    if name and Path(name).expanduser().resolve() == Path(MODEL_DIR).resolve():
        return "finwidget demo model"
    return name
