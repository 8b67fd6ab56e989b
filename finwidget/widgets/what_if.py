"""What-if in the explorer: edit a number of the statement, re-run the model, compare.

A what-if replaces a number of the statement (``finwidget.statement.edits.SetNumber`` on
its characters; the counterfactual code recomputes the change column), runs the model on
the edited statement (a new :class:`~finwidget.widgets.session.ModelSession`) and shows
it in the explorer beside the original: the prediction panel lists both predictions and
the edits, the statement view shows the edited text with the changed spans marked, and
with ``what_if_difference`` on the grid and the statement are coloured by the
difference edited minus original (per head; per span, the spans of the two runs matched
by :func:`align_spans` even where the edit changed the number of tokens).

Edits stack (each applies to the statement the explorer shows); undo removes the newest.
The explorer's ``what_if_state`` trait (:func:`WhatIfStack.state`) holds the edits and both
predictions: it is saved with the notebook and embedded by ``save_html``.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidget.errors import InputError
from finwidget.statement import edits as statement_edits

#: why an explorer without the model cannot try a what-if (shown in the UI instead of the editor)
NO_MODEL_REASON = (
    "this explorer shows recorded attention only: a what-if re-runs the model "
    "(use AttentionExplorer(model, tokenizer, text))"
)

_NUMBER_TEXT = re.compile(r"^[+\-\u2212]?\$?\d{1,3}(,\d{3})+(\.\d+)?$|^[+\-\u2212]?\$?\d+(\.\d+)?$")


def parse_number_text(text: str) -> float | None:
    """The number a person typed, or ``None`` when the text is not a number.

    Accepts an optional sign (``+``, ``-`` or the minus sign ``−``), an optional ``$``,
    digits with or without thousands separators (``1,250``), decimals, and parentheses
    for a negative number (``(100)``). The same rule as ``parseNumberText`` in js/what_if.ts.
    """
    if not isinstance(text, str):
        return None
    s = text.strip()
    negative = False
    if len(s) > 2 and s[0] == "(" and s[-1] == ")":
        s, negative = s[1:-1].strip(), True
        if s[:1] in "+-\u2212" and s:
            return None
    if not _NUMBER_TEXT.match(s):
        return None
    sign = -1.0 if s[0] in "-\u2212" else 1.0
    value = float(s.lstrip("+-\u2212").lstrip("$").replace(",", ""))
    value *= -sign if negative else sign
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------- span alignment
def statement_offset(layout, statement_text: str) -> int:
    """Where the statement starts in the layout's text (the prompt; spans index into it)."""
    at = layout.text.find(statement_text)
    if at < 0:
        raise InputError("the statement is not part of the prompt the explorer ran (the task changed it)")
    return at


def _char_map_from_alignment(original, edited, counterfactual) -> np.ndarray | None:
    """``[len(edited.text) + 1]``: each character of the edited prompt -> the original
    prompt's (-1 inside a changed number), from the counterfactual's own alignment; None
    when it has none for these texts."""
    alignment = getattr(counterfactual, "alignment", None)
    segments = getattr(alignment, "spans", None)
    if not segments or counterfactual.original not in original.text or counterfactual.text not in edited.text:
        return None
    off_a, off_b = original.text.find(counterfactual.original), edited.text.find(counterfactual.text)
    char_map = np.full(len(edited.text) + 1, -1, dtype=np.int64)
    char_map[: off_b + 1] = np.arange(off_a - off_b, off_a + 1)  # the prompt before the statement
    end_a, end_b = off_a + len(counterfactual.original), off_b + len(counterfactual.text)
    char_map[end_b:] = np.arange(end_a, end_a + len(edited.text) + 1 - end_b)  # and after it
    for seg in segments:
        if not seg.changed:  # the same characters, shifted
            char_map[off_b + seg.edited_start : off_b + seg.edited_end + 1] = np.arange(
                off_a + seg.original_start, off_a + seg.original_end + 1
            )
    return char_map


def _char_map_by_diff(original, edited) -> np.ndarray:
    matcher = difflib.SequenceMatcher(None, original.text, edited.text, autojunk=False)
    char_map = np.full(len(edited.text) + 1, -1, dtype=np.int64)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            char_map[b0 : b1 + 1] = np.arange(a0, a1 + 1)
    return char_map


def align_spans(original, edited, counterfactual=None) -> np.ndarray:
    """``[S_edited]`` int64: for each span of ``edited`` (a ``StatementLayout``), the span
    of ``original`` it corresponds to, or -1 where there is none.

    Text outside the edit is the same in both: spans there match by their characters (the
    counterfactual's ``alignment`` says which characters correspond; without one, ``difflib``
    on the two texts). A span inside an edited region (the edited number, the recomputed
    change) matches the original span of the same kind, line item and year on the same
    line, so the match holds however many tokens the new number takes.
    """
    out = np.full(edited.num_spans, -1, dtype=np.int64)
    by_start = {(s.char_start, s.char_end): s.index for s in original.spans}
    char_map = _char_map_from_alignment(original, edited, counterfactual)
    if char_map is None:
        char_map = _char_map_by_diff(original, edited)
    keyed = {}
    for s in original.spans:
        keyed.setdefault((s.kind, s.line_item, s.year, s.line), []).append(s.index)
    for s in edited.spans:
        a, b = char_map[s.char_start], char_map[s.char_end]
        if a >= 0 and b >= 0 and (int(a), int(b)) in by_start:
            out[s.index] = by_start[(int(a), int(b))]
            continue
        # Inside an edit: the span of the same kind, line item and year on the same line.
        candidates = keyed.get((s.kind, s.line_item, s.year, s.line), [])
        if s.line_item is not None and len(candidates) == 1:
            out[s.index] = candidates[0]
    # One original span for one edited span at most (the first keeps it).
    seen: set[int] = set()
    for j, i in enumerate(out):
        if i >= 0 and int(i) in seen:
            out[j] = -1
        seen.add(int(i))
    return out


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer``: newest -> middle spans; ``inner``: middle -> oldest: newest -> oldest."""
    return np.where(outer >= 0, inner[np.clip(outer, 0, None)], -1) if inner.size else np.full_like(outer, -1)


def span_name(span) -> str:
    """What the UI calls a number span: "Net income 2012", "Net income change", or its text."""
    if span.line_item and span.year is not None and span.kind == "number":
        return f"{span.line_item} {span.year}"
    if span.line_item and span.kind == "number":
        return f"{span.line_item} change"
    if span.line_item:
        return f"{span.line_item} ({span.kind.replace('_', ' ')})"
    return f"“{span.text}”"


# ---------------------------------------------------------------------------- the stack of edits
@dataclass
class WhatIfStep:
    """One applied counterfactual: the session of its statement, the map of its spans to
    the spans of the statement before it (``[S]``, -1 where none) and its edits described."""

    counterfactual: Any  # a finwidget.statement.edits.CounterfactualStatement
    session: Any  # the edited statement's ModelSession
    span_map: np.ndarray
    edits: list = field(default_factory=list)


class WhatIfStack:
    """The what-ifs of the statement the explorer shows: its original session and the
    steps applied on top of it (newest last)."""

    def __init__(self, base, available: bool = True, reason: str = ""):
        self.base: Any = base  # the original statement's session (ModelSession or recorded)
        self.steps: list[WhatIfStep] = []
        self.available = available
        self.reason = reason

    @property
    def current(self) -> Any:
        return self.steps[-1].session if self.steps else self.base

    def span_map_to_base(self) -> np.ndarray:
        """``[S_current]``: each span of the statement shown -> the original's span (-1: none)."""
        out = np.arange(self.current.layout.num_spans, dtype=np.int64)
        for step in reversed(self.steps):
            out = compose(out, step.span_map)
        return out

    def base_selection(self, selection: list[int]) -> list[int]:
        """A span range of the statement shown as a range of the original's spans ([] if none)."""
        if not selection:
            return []
        mapped = [int(i) for i in self.span_map_to_base()[selection[0] : selection[1]] if i >= 0]
        return [min(mapped), max(mapped) + 1] if mapped else []

    def changes(self) -> list[dict]:
        """Every span of the statement shown whose text differs from the original's span."""
        base, current = self.base.layout, self.current.layout
        out = []
        for j, i in enumerate(self.span_map_to_base()):
            span = current.spans[j]
            if not span.in_statement or span.kind == "break":
                continue
            old = base.spans[int(i)].text if i >= 0 else ""
            if i < 0 or old != span.text:
                out.append({"span": j, "what": span_name(span), "old": old, "new": span.text})
        return out

    def state(self) -> dict:
        """The ``what_if_state`` trait: ``{"available", "disabled_reason"}`` and, with edits,
        ``"edits"`` ([{description, what, old, new, step}]), ``"changes"`` ([{span, what,
        old, new}]: every changed span of the statement shown), ``"changed_spans"``,
        ``"original"`` / ``"edited"`` (clean predictions), ``"flipped"``, ``"logit_diff_change"``,
        ``"original_text"`` and ``"steps"``."""
        state: dict = {"available": self.available, "disabled_reason": self.reason}
        if not self.steps:
            return state
        original, edited = self.base.clean.to_dict(), self.current.clean.to_dict()
        changes = self.changes()
        state.update(
            steps=len(self.steps),
            edits=[{**e, "step": n} for n, step in enumerate(self.steps) for e in step.edits],
            changes=changes,
            changed_spans=[c["span"] for c in changes],
            original=original,
            edited=edited,
            flipped=original["label"] != edited["label"],
            logit_diff_change=edited["logit_diff"] - original["logit_diff"],
            original_text=self.base.text,
        )
        return state


def describe_edits(counterfactual) -> list[dict]:
    """``[{description, what, old, new}]``: each number the counterfactual's edits set
    ("Net income 2012: 195 → -100"), from its ``changes`` made by an edit (recomputed
    changes and totals are listed by :meth:`WhatIfStack.changes`)."""
    out = []
    for change in getattr(counterfactual, "changes", ()) or ():
        if change.cause != "edit":
            continue
        if change.item and change.year is not None:
            what = f"{change.item} {change.year}"
        elif change.item:
            what = f"{change.item} {change.role.replace('_', ' ')}"
        else:
            what = f"“{change.old}”"
        out.append({"description": f"{what}: {change.old} → {change.new}", "what": what,
                    "old": change.old, "new": change.new})
    return out


# ---------------------------------------------------------------------------- the explorer's part
class WhatIfMixin:
    """The what-if part of :class:`~finwidget.widgets.explorer.AttentionExplorer`."""

    if TYPE_CHECKING:  # provided by AttentionExplorer (its traits and anywidget's HasTraits)
        session: Any
        what_if_state: Any
        ablations: Any
        geometry: Any

        def set_trait(self, name: str, value: Any) -> None: ...
        def observe(self, handler: Any, names: Any = ...) -> None: ...
        def hold_sync(self) -> Any: ...

    def _init_what_if(self) -> None:
        from finwidget.widgets.session import ModelSession

        session = self.session
        available = isinstance(session, ModelSession)
        self._what_if = WhatIfStack(session, available, "" if available else NO_MODEL_REASON)
        self.set_trait("what_if_state", self._what_if.state())
        self.observe(self._what_if_on_statement_index, names="statement_index")

    def _what_if_on_statement_index(self, change) -> None:
        # Another statement: its own original, no edits (the old statement's edits are dropped).
        if self.session is not self._what_if.current:
            self._what_if = WhatIfStack(self.session, self._what_if.available, self._what_if.reason)
            self.set_trait("what_if_state", self._what_if.state())

    @property
    def what_if_stack(self) -> WhatIfStack:
        """The original session and the what-if steps applied on top of it."""
        return self._what_if

    def what_if(self, edits) -> dict:
        """Edit the statement and re-run the model, as double-clicking a number does.

        ``edits``: a ``CounterfactualStatement`` (of the statement shown, which stacks on the
        edits already made, or of the original statement, which replaces them), or a list
        of edit objects of :mod:`finwidget.statement.edits` (e.g. ``SetNumber(span=(start,
        end), value=-100)``, character spans of the statement shown: ``explorer.session.text``).
        Returns the ``what_if_state`` trait (both predictions, the edits). A refused edit
        raises ``InputError`` and leaves the explorer as it was.
        """
        with self._model_turn():
            return self._apply_what_if(edits)

    @contextlib.contextmanager
    def _model_turn(self):
        """Hold the model for a what-if from Python: refused at once while a sweep runs beside
        the kernel (never waited for); a click's exact re-run is waited for, a background
        gradient pass steps aside. The frontend's requests hold it in ``handle_request``."""
        refusal = "a sweep is running: wait for it to finish (or cancel it) before a what-if"
        if getattr(self, "sweeping", False):
            raise InputError(refusal)
        worker = getattr(self, "model_worker", None)
        if worker is None:
            lock = getattr(self, "model_lock", None)
            if lock is not None and not lock.acquire(blocking=False):
                raise InputError(refusal)
            try:
                yield
            finally:
                if lock is not None:
                    lock.release()
            return
        with worker.hold_model(give_up=lambda: getattr(self, "sweeping", False)) as got:
            if not got:
                raise InputError(refusal)
            yield

    def undo_what_if(self) -> dict:
        """Remove the newest what-if edit (the original statement once none is left).
        Returns the ``what_if_state`` trait."""
        with self._model_turn():
            return self._undo_what_if()

    def _undo_what_if(self) -> dict:
        if not self._what_if.steps:
            raise InputError("there is no what-if edit to undo")
        self._what_if.steps.pop()
        self._show_what_if()
        return self.what_if_state

    def what_if_number(self, span_index: int, value) -> dict:
        """Set the number of span ``span_index`` (of the statement shown) to ``value`` (a
        number or the text typed): what the statement view's editor sends."""
        with self._model_turn():
            return self._what_if_number(span_index, value)

    def _what_if_number(self, span_index: int, value) -> dict:
        stack = self._what_if
        if not stack.available:
            raise InputError(stack.reason)
        session = stack.current
        layout = session.layout
        if not 0 <= span_index < layout.num_spans:
            raise InputError(f"span {span_index} is not a span of the statement ({layout.num_spans} spans)")
        span = layout.spans[span_index]
        if span.kind != "number" or not span.in_statement:
            raise InputError(f"“{span.text}” is not a number of the statement: only numbers can be edited")
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else parse_number_text(str(value))
        if number is None or not math.isfinite(number):
            raise InputError(f"“{str(value)[:40]}” is not a number: type digits, e.g. -100 or 1,250")
        if float(number).is_integer():
            number = int(number)
        offset = statement_offset(layout, session.text)
        edit = statement_edits.SetNumber(span=(span.char_start - offset, span.char_end - offset), value=number)
        return self._apply_what_if([edit])

    def _apply_what_if(self, edits) -> dict:
        from finwidget.widgets.session import ModelSession

        stack = self._what_if
        if not stack.available:
            raise InputError(stack.reason)
        if hasattr(edits, "text") and hasattr(edits, "original"):
            cf = edits
        else:
            if not isinstance(edits, (list, tuple)):
                edits = [edits]
            if not edits:
                raise InputError("what_if needs at least one edit")
            try:
                cf = statement_edits.counterfactual(stack.current.text, list(edits))
            except InputError:
                raise
            except Exception as err:  # the counterfactual code refused the edit: named as an InputError
                raise InputError(f"the edit was refused: {err}") from err
        if cf.original == stack.current.text:
            keep = list(stack.steps)
        elif cf.original == stack.base.text:
            keep = []  # a counterfactual of the original replaces the edits made so far
        else:
            raise InputError("the counterfactual was made from another statement than the one the explorer shows")
        parent = keep[-1].session if keep else stack.base
        if cf.text == parent.text:
            raise InputError("the edit changes nothing in the statement")
        session = ModelSession(
            parent.model, parent.tokenizer, cf.text, task=parent.task, reference=parent.reference_set,
            truncate=getattr(self, "_truncate", False), store_dtype=parent.store_dtype, sweeps=parent.sweeps,
        )
        span_map = align_spans(parent.layout, session.layout, cf)
        step = WhatIfStep(cf, session, span_map, describe_edits(cf))
        stack.steps = keep + [step]
        try:
            self._show_what_if()
        except Exception:
            stack.steps = stack.steps[:-1]
            self._show_what_if()
            raise
        return self.what_if_state

    def _show_what_if(self) -> None:
        """Show the newest step's statement (or the original) in every view."""
        from finwidget.widgets.protocol import Geometry, layout_state

        s = self._what_if.current
        prediction = s.prediction(self.ablations)
        self.session = s
        self.protocol_geometry = Geometry(num_layers=s.num_layers, num_heads=s.num_heads, num_spans=s.layout.num_spans)
        with self.hold_sync():
            self.selection = {}
            self.set_trait("statement_layout", layout_state(s.layout, s.token_texts(), s.answer_position))
            self.set_trait("geometry", {**self.geometry, "seq_len": s.seq_len})
            self.set_trait("prediction", prediction)
            self.set_trait("what_if_state", self._what_if.state())
            if self.grid_measure == "ablation_effect" and getattr(s, "sweep_table", None) is None:
                self.grid_measure = "attention_to_selection"

    # ------------------------------------------------------------------ differences
    def _require_what_if(self) -> WhatIfStack:
        stack = self._what_if
        if not stack.steps:
            raise InputError("no what-if edit to compare with: double-click a number of the statement to edit it")
        return stack

    def what_if_grid_difference(self, measure: str, selection: list[int], direction: str = "to"):
        """``([L, H] float32, legend)``: a grid measure of the edited run minus the original
        run (the selection, of the statement shown, is mapped to the original's spans)."""
        stack = self._require_what_if()
        edited, label = stack.current.grid(measure, selection, direction)
        original, _ = stack.base.grid(measure, stack.base_selection(selection), direction)
        diff = np.asarray(edited, dtype=np.float32) - np.asarray(original, dtype=np.float32)
        return diff, f"{label}: edited − original"

    def what_if_span_difference(self, scope: str, layer=None, head=None, layer_range=None):
        """``([T] float32 edited run's values, [S] float32 difference, label)``: the attention
        from the answer position of the heads in ``scope`` (the focused head by default),
        summed per span, edited run minus original run, the spans matched by
        :func:`align_spans` (NaN for a span of the edited statement with no original span)."""
        from finwidget.statement import aggregate_to_spans

        stack = self._require_what_if()
        current, base = stack.current, stack.base
        edited_tokens, _, label = current.token_values(scope, [], "from", layer, head, layer_range)
        original_tokens, _, _ = base.token_values(scope, [], "from", layer, head, layer_range)
        edited = np.asarray(aggregate_to_spans(edited_tokens, current.layout), dtype=np.float32)
        original = np.asarray(aggregate_to_spans(original_tokens, base.layout), dtype=np.float32)
        mapping = stack.span_map_to_base()
        diff = np.where(mapping >= 0, edited - original[np.clip(mapping, 0, None)], np.nan).astype(np.float32)
        return edited_tokens, diff, f"{label}, attention from the answer position: edited − original"
