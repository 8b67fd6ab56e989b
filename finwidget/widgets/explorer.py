"""The explorer widget's Python API: linked statement, layer x head grid, attention
matrix, layer flow and prediction views of one statement, with head ablation from the UI.

Small state is in traitlets (the schema is :class:`~finwidget.widgets.protocol.ExplorerState`:
saved with the notebook, linkable with ``ipywidgets.link``); big data goes to the
frontend as binary custom messages when a view asks for it
(:mod:`finwidget.widgets.protocol`, answered by :mod:`finwidget.widgets.handlers`). What
the views show comes from a session (:mod:`finwidget.widgets.session`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import anywidget

from finwidget.errors import InputError
from finwidget.widgets.handlers import handle_request
from finwidget.widgets.model_worker import ModelWorker
from finwidget.widgets.protocol import (
    DEFAULT_VIEW_NAMES,
    EXPLORER_MODES,
    READ_ONLY_STATE,
    VIEW_NAMES,
    ExplorerState,
    Geometry,
    layout_state,
    progress_message,
    startup_catalogue,
)
from finwidget.widgets.session import ExplorerSession, ModelSession, RecordedSession, SweepResults
from finwidget.widgets.what_if import WhatIfMixin

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations are not evaluated at run time

STATIC = Path(__file__).resolve().parent.parent / "static"
_STATE_KWARGS = {"statement_layout", "geometry", "direction", "grid_measure", "layer_range", "settings"}


def statement_list(statements) -> list[str]:
    """The explorer's statements as texts: one string, or a list / tuple / pandas Series /
    one-column DataFrame / any iterable of strings or demo ``Statement`` objects."""
    if isinstance(statements, str):
        texts = [statements]
    else:
        try:
            import pandas as pd

            if isinstance(statements, pd.DataFrame):
                if statements.shape[1] != 1:
                    raise InputError(
                        f"pass one column of the DataFrame (df['text']), not {statements.shape[1]} columns"
                    )
                statements = statements.iloc[:, 0]
        except ImportError:  # pragma: no cover - pandas is a dependency
            pass
        try:
            items = list(statements)
        except TypeError:
            raise InputError(f"text must be a statement or a list of statements, got {type(statements).__name__}") from None
        texts = [getattr(item, "text", item) for item in items]
    if not texts:
        raise InputError("the explorer needs at least one statement, got an empty list")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(f"each statement must be a string (or a demo Statement); items {bad[:5]} are not")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty and len(texts) > 1:  # a single statement gets the task's own message
        raise InputError(f"statements {empty[:5]} of the list are empty")
    return texts


def statement_label(text: str, width: int = 60) -> str:
    """A short label of a statement for the picker: its first line that holds a number."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pick = next((line for line in lines if any(c.isdigit() for c in line)), lines[0] if lines else "")
    return pick if len(pick) <= width else pick[: width - 1] + "…"


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


class AttentionExplorer(WhatIfMixin, ExplorerState, anywidget.AnyWidget):
    """Explore what every head of every layer does on a financial statement.

    Args:
        model: a Hugging Face causal LM (e.g. Qwen2-7B, or ``finwidget.load_demo_model()``).
        tokenizer: its (fast) tokenizer.
        text: the statement; the task adds the question and the answer prefix. Or several
            statements: a list of strings (or demo ``Statement`` objects), a pandas Series
            or DataFrame column, any iterable of them; the explorer shows one at a time
            with a picker and previous/next, and sweeps over all of them.
        task: an :class:`~finwidget.task.EarningsTask` (default ``EarningsTask(tokenizer)``).
        views: which views to show, any of ``"prediction", "statement", "grid", "matrix",
            "flow", "circuit"`` (default: all but ``"circuit"``, which finds the statement's
            circuit and so runs the model several times: ask for it by name).
        focus: ``(layer, head)`` to focus first (default: layer 0, head 0).
        selection: ``(start, end)`` span range to select first (default: none).
        reference: statements (or an encoded batch, or recorded ``HeadOutputs``) whose
            mean head outputs the "mean" ablation uses, as the Python API's
            ``mode="mean"`` does (default: the demo generator's statements for the demo
            model; for another model without a reference "mean" is disabled, with the
            reason shown in the UI).
        truncate: drop tokens from the start of a statement longer than the context.
        number_locale: how the statements group digits, for the statement reader: ``"en"``
            (1,234.56, the default), ``"de"`` (1.234,56) or ``"in"`` (12,34,567.89).

    Traits (read and set them from Python; ``ipywidgets.link`` works on them):
        focus: ``{"layer", "head"}``; selection: ``{"start", "end"}`` span range or ``{}``;
        direction: ``"from" | "to"``; grid_measure; layer_range: ``[]`` or ``[first, last]``;
        ablations: ``[{"layer", "head", "mode"[, "value"]}]``; settings; prediction
        (``{"clean", "ablated", "flipped"}``, read only); views; what_if_state (the what-if
        edits and both predictions, read only); what_if_difference. See
        :class:`~finwidget.widgets.protocol.ExplorerState`.

    What-if: :meth:`what_if` edits the statement and re-runs the model (as double-clicking
    a number in the statement view does), :meth:`undo_what_if` removes the newest edit
    (:mod:`finwidget.widgets.what_if`).
    """

    _esm = _bundle("widget.js")
    _css = _bundle("widget.css")

    def __init__(
        self,
        model,
        tokenizer,
        text: str | Iterable,
        task=None,
        *,
        views=None,
        focus=None,
        selection=None,
        reference=None,
        truncate: bool = False,
        session: ExplorerSession | None = None,
        number_locale: str = "en",
        **kwargs,
    ):
        unknown = set(kwargs) - _STATE_KWARGS
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
        texts = statement_list(text) if session is None else [session.text]
        self._model, self._tokenizer, self._task, self._truncate = model, tokenizer, task, truncate
        self._number_locale = number_locale
        self.statement_texts = texts
        self.sweep_cancel = threading.Event()
        #: held while the model runs (clicks and sweeps run in threads beside the kernel:
        #: :mod:`finwidget.widgets.model_worker`); re-entrant, so a worker can set traits
        self.model_lock = threading.RLock()
        self.sweeping = False
        self.model_worker = ModelWorker(self)
        self.sweep_table = None  # rows of the newest sweep over every statement (head, statement)
        if session is None:
            from finwidget.task import EarningsTask

            self._task = task = task if task is not None else EarningsTask(tokenizer)
            self._sweeps = SweepResults()
            # The session encodes (and so checks) the statement before recording the reference set.
            session = ModelSession(model, tokenizer, texts[0], task=task, reference=reference,
                                   truncate=truncate, sweeps=self._sweeps, number_locale=number_locale)
        else:
            self._sweeps = getattr(session, "sweeps", None) or SweepResults()
        self._sessions: dict[int, ExplorerSession] = {0: session}
        self.session = s = session
        self.protocol_geometry = Geometry(
            num_layers=s.num_layers, num_heads=s.num_heads, num_spans=s.layout.num_spans
        )
        self.last_png: bytes | None = None
        self.last_png_view: str | None = None
        kwargs.setdefault("statement_layout", layout_state(s.layout, s.token_texts(), s.answer_position))
        kwargs.setdefault(
            "geometry",
            {
                "num_layers": s.num_layers,
                "num_heads": s.num_heads,
                "num_kv_heads": s.num_kv_heads,
                "head_dim": s.head_dim,
                "seq_len": s.seq_len,
                "model_name": str(s.model_name).split("/")[-1],
            },
        )
        reference_info = s.reference_set.to_dict() if isinstance(s, ModelSession) else None
        read_only = {
            "catalogue": startup_catalogue(reference_info, can_intervene=s.can_intervene),
            **{k: kwargs.pop(k) for k in READ_ONLY_STATE if k in kwargs},
        }
        super().__init__(
            statements=[{"index": i, "label": statement_label(t)} for i, t in enumerate(texts)],
            **kwargs,
        )
        for name, value in read_only.items():
            self.set_trait(name, value)
        if views is not None:
            self.views = list(views)
        if focus is not None:
            layer, head = focus
            self.focus = {"layer": layer, "head": head}
        if selection is not None:
            start, end = selection
            self.selection = {"start": start, "end": end}
        self.set_trait("prediction", s.prediction([]))
        self.on_msg(self._on_custom_message)
        self.observe(self._on_ablations, names="ablations")
        self.observe(self._on_statement_index, names="statement_index")
        self._init_what_if()  # after the statement observer: a new statement drops the what-if

    @classmethod
    def for_session(cls, session: ExplorerSession, **kwargs) -> Self:
        """An explorer (or one of its single views) of a ready session."""
        return cls(None, None, session.text, session=session, **kwargs)

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
        session = RecordedSession(attention, layout, prediction=prediction, model_name=model_name)
        if views is None:
            views = [v for v in DEFAULT_VIEW_NAMES if v != "prediction" or prediction is not None]
        return cls.for_session(session, views=views, focus=focus, selection=selection, **kwargs)

    def _on_ablations(self, change):
        try:
            with self.model_worker.hold_model():  # a click's re-run or a sweep may hold the model
                prediction = self.session.prediction(change["new"])
        except Exception:
            # a set the model cannot answer (e.g. a value that overflows): the ablations go back to
            # the set the prediction belongs to, and the error reaches the caller
            self.set_trait("ablations", change["old"])
            raise
        self.set_trait("prediction", prediction)

    # ------------------------------------------------------------------ several statements
    @property
    def num_statements(self) -> int:
        return len(self.statement_texts)

    def _session_for(self, index: int) -> ExplorerSession:
        if index not in self._sessions:
            first = self._sessions[0]
            if not isinstance(first, ModelSession):
                raise InputError("only an explorer that runs a model can open another statement")
            self._sessions[index] = ModelSession(
                self._model, self._tokenizer, self.statement_texts[index], task=self._task,
                reference=first.reference_set, truncate=self._truncate, sweeps=self._sweeps,
                store_dtype=first.store_dtype, number_locale=self._number_locale,
            )
        return self._sessions[index]

    def _on_statement_index(self, change):
        index = change["new"]
        if not isinstance(index, int) or not 0 <= index < self.num_statements:
            self.statement_index = change["old"]
            raise InputError(f"statement_index must be 0..{self.num_statements - 1}, got {index!r}")
        if self.sweeping:
            self.statement_index = change["old"]
            raise InputError("a sweep is running: wait for it to finish (or cancel it) before changing statements")
        with self.model_worker.hold_model():  # a click's re-run finishes, a gradient pass steps aside
            s = self._session_for(index)
        self.session = s
        self.protocol_geometry = Geometry(
            num_layers=s.num_layers, num_heads=s.num_heads, num_spans=s.layout.num_spans
        )
        with self.hold_sync():
            self.selection = {}
            self.set_trait("statement_layout", layout_state(s.layout, s.token_texts(), s.answer_position))
            self.set_trait("geometry", {**self.geometry, "seq_len": s.seq_len})
            self.set_trait("prediction", s.prediction(self.ablations))  # the ablations stay as they were
            if self.grid_measure == "ablation_effect" and getattr(s, "sweep_table", None) is None:
                self.grid_measure = "attention_to_selection"

    def show_statement(self, index: int) -> dict:
        """Show statement ``index`` (0-based) of the list; the ablations stay. Returns the prediction."""
        self.statement_index = index
        return self.prediction

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

    def sweep(self, mode: str = "zero", value: float | None = None, progress=None, layers=None,
              statements: str = "current", should_stop=None):
        """Ablate every head alone; colour the grid by the change in logit difference.

        ``layers``: only the heads of these layers (e.g. ``range(20, 28)``), NaN elsewhere.
        ``statements="all"``: sweep every statement of the explorer; the grid shows the
        mean |change| per head (``flip_rate`` is the other measure it fills) and the
        :func:`~finwidget.interventions.sweep.summarize_sweep` table is returned (one row
        per head: mean_change, mean_abs_change, flip_rate, n_statements); the rows per
        (head, statement) are kept in ``explorer.sweep_table``.
        Returns, for the current statement, the :func:`~finwidget.interventions.sweep.sweep_heads`
        table (layer, head, mode, logit_diff, clean_logit_diff, change, flipped) of the heads swept.
        ``should_stop``: polled after each head; True stops the sweep (``SweepCancelled``).
        """
        if statements not in ("current", "all"):
            raise InputError(f"statements must be 'current' or 'all', got {statements!r}")
        if mode not in EXPLORER_MODES:
            raise InputError(f"mode must be one of {tuple(EXPLORER_MODES)}, got {mode!r}")
        if layers is not None:
            layers = list(layers)
            bad = [
                lay for lay in layers if not isinstance(lay, int) or not 0 <= lay < self.session.num_layers
            ]
            if bad or not layers:
                raise InputError(
                    f"layers must be a non-empty list of layer indices 0..{self.session.num_layers - 1}, got {layers!r}"
                )
        self.sweep_cancel.clear()
        with self.model_worker.hold_model():  # a click's re-run or a gradient pass may hold the model
            if statements == "all":
                summary, self.sweep_table = self.session.sweep_statements(
                    self.statement_texts, mode, value, layers=layers, progress=progress, should_stop=should_stop
                )
                result, measure = summary, "mean_abs_change"
            else:
                result = self.session.sweep(mode, value, progress=progress, layers=layers, should_stop=should_stop)
                measure = "ablation_effect"
        self.set_trait("sweep_done", False)
        self.set_trait("sweep_done", True)
        self.grid_measure = measure
        return result

    def prepare_estimates(self) -> None:
        """Compute now the gradients the explorer's click estimates read for the statement
        shown (one forward and one backward pass; otherwise they are computed in the
        background after the first click). Clicks then show a first-order estimate at once."""
        if not isinstance(self.session, ModelSession):
            raise InputError("click estimates need the model: this explorer only shows recorded attention")
        with self.model_worker.hold_model():
            self.session.prepare_estimates()

    def state_size(self) -> int:
        """Bytes of this widget's synced state as saved in a notebook (JSON of every synced trait)."""
        import json

        state = self.get_state()
        return len(json.dumps(state, default=str).encode("utf-8"))

    def save_html(self, path, title: str | None = None, heads: str = "focus") -> Path:
        """Write a standalone page (works offline, no CDN) showing the current state.

        ``heads="layer"`` also embeds every head of the focused layer's matrix, so the page
        can switch between them without a kernel; ``heads="all"`` every head's (up to 32 MiB).
        """
        from finwidget.widgets.export import save_explorer_html

        return save_explorer_html(self, path, title=title, heads=heads)

    # ------------------------------------------------------------------ messages
    def handle_request(self, content, buffers=None, send_progress=None) -> tuple[dict, list]:
        """Answer one request from the frontend: ``(reply content, reply buffers)``.

        Never raises: a malformed request or a failure inside gets an error reply.
        """
        return handle_request(self, content, send_progress)

    def _on_custom_message(self, _widget, content, buffers):
        def send_progress(done, total, message=""):
            self.send(progress_message(content["id"], done, total, message))

        def answer(model_lock_held: bool = False):
            reply, reply_buffers = handle_request(self, content, send_progress, model_lock_held=model_lock_held)
            self.send(reply, reply_buffers)

        kind = content.get("kind") if isinstance(content, dict) else None
        if kind == "sweep":
            # A sweep runs beside the kernel's message loop so a cancel_sweep can reach it.
            self.model_worker.sweep(answer)
        elif kind == "set_ablations" and isinstance(self.session, ModelSession) and not self.sweeping:
            # So does a click's exact re-run, so a newer click can stop it between layers.
            self.model_worker.click(content, self.send)
        else:
            answer()

