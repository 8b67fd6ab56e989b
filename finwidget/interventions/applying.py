"""Applying intervention sets to a model: forward pre-hooks on ``o_proj``.

:func:`apply_interventions` (also ``InterventionSet.applied``) is a context manager.
On entry it records what mean/resample modes need (one clean forward each), then
registers one pre-hook per intervened layer on ``layers[l].self_attn.o_proj`` and one
on the decoder stack that tracks where in the sequence the current call is (so
positions keep their meaning during ``generate``'s decode steps). On exit, on every
path (exceptions, KeyboardInterrupt, a generator closed inside the block), every hook
it registered is removed, and nothing else about the model was changed.

Hooks compose: nested or overlapping sets apply in the order they were entered.

The same machinery edits batches whose rows get different sets ("row groups"), which
is how :class:`~finwidget.interventions.cached_run.CachedRun` batches many sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from finwidget.errors import CaptureStateError, InputError, LocationError, NonFiniteError
from finwidget.interventions.head_outputs import HeadOutputs
from finwidget.interventions.spec import HeadIntervention, InterventionSet, provide_applier
from finwidget.model_parts import (
    ModelGeometry,
    decoder_stack,
    final_norm,
    head_output_site,
    hook_head_outputs,
    remove_hooks,
)


@dataclass
class SequenceWindow:
    """Which absolute positions the current forward call covers.

    offset: tokens already in the cache (0 for a prompt, then growing during decoding).
    total: offset + tokens of this call (None: unknown, taken as this call's length).
    attention_mask: ``[batch, total]`` padding mask of the call, when known (None: no padding).
    growing: the call passed a KV cache (``generate``): the sequence may go on past this call,
        so a position past its end is a token not generated yet rather than an error.
    """

    offset: int = 0
    total: int | None = None
    attention_mask: torch.Tensor | None = None
    growing: bool = False

    def absolute_columns(self, call_length: int, device) -> torch.Tensor:
        return torch.arange(self.offset, self.offset + call_length, device=device)

    def total_for(self, call_length: int) -> int:
        return self.total if self.total is not None else self.offset + call_length


def statement_tokens(window: SequenceWindow, rows: slice, n_rows: int, total: int, device) -> torch.Tensor:
    """``[n_rows, total]`` bool: which columns of ``rows`` are the statements' own tokens (not padding)."""
    mask = window.attention_mask
    if mask is None or mask.dim() != 2 or mask.shape[1] != total:
        return torch.ones((n_rows, total), dtype=torch.bool, device=device)
    return mask[rows].to(device=device).bool()


def check_positions(interventions, lengths, growing: bool = False, rows_offset: int = 0) -> None:
    """A :class:`~finwidget.errors.LocationError` when a position of ``interventions`` is outside a
    statement: ``lengths`` are the statements' token counts (their own tokens, padding excluded).
    ``growing``: the statements are being generated, so positions past their end are allowed
    (they are edited once generated); negative positions must still be inside."""
    lengths = [int(n) for n in lengths]
    for iv in interventions:
        for p in iv.positions or ():
            for row, n in enumerate(lengths):
                if (growing and p >= 0) or -n <= p < n:
                    continue
                which = "the statement" if len(lengths) == 1 else f"statement {row + rows_offset}"
                raise LocationError(
                    f"position {p} of {iv.describe()} is outside {which}, which has {n} tokens (valid: 0..{n - 1}, "
                    f"or {-n}..-1 from its end); positions count each statement's own tokens, padding excluded"
                )


def check_values_fit(interventions, model) -> None:
    """An :class:`~finwidget.errors.InputError` before any model work when a value of
    ``interventions`` is beyond the largest number of the model's dtype at its layer (the head's
    output would be infinite and the answer NaN). Values inside the range can still overflow
    later in the network; the answer's readout (:func:`~finwidget.task.check_finite_answer`)
    refuses those."""
    for iv in interventions:
        if iv.value is None:
            continue
        dtype = next(head_output_site(model, iv.layer).parameters()).dtype
        if not dtype.is_floating_point:
            continue
        limit = torch.finfo(dtype).max
        if abs(iv.value) > limit:
            raise InputError(
                f"{iv.describe()}: value {iv.value:g} is beyond the largest {str(dtype).replace('torch.', '')} "
                f"number ({limit:g}) the model computes with at layer {iv.layer}; the head's output would "
                "overflow to infinity and the answer to NaN. Use a smaller value"
            )


@dataclass
class RowGroup:
    """Rows ``rows`` of the batch get ``interventions``; reference/source feed mean/resample."""

    rows: slice
    interventions: InterventionSet
    reference: HeadOutputs | None = None
    source: HeadOutputs | None = None
    source_rows: slice | None = None


class _PreparedEdit:
    """One head intervention with what its mode reads (the reference mean / the source's
    output of the head), moved to devices on demand."""

    def __init__(self, intervention: HeadIntervention, geometry: ModelGeometry, group: RowGroup):
        self.intervention = intervention
        self.mode = intervention.intervention_mode
        self.slice = geometry.head_slice(intervention.head)
        self.group = group
        self.replacement: torch.Tensor | None = None  # [D], [T_ref, D] or [B_src, T_src, D]
        outputs = group.reference if self.mode.needs_reference else group.source
        if self.mode.reads_recorded_outputs:
            values = self.mode.recorded(outputs, intervention.layer, intervention.per_position)
            assert values is not None, "a mode that reads recorded outputs returns them"
            if self.mode.needs_source and group.source_rows is not None:
                values = values[group.source_rows]
            self.replacement = values[..., self.slice]
        self._moved: dict[tuple, torch.Tensor] = {}

    def replacement_on(self, device, dtype) -> torch.Tensor:
        key = (str(device), dtype)
        moved = self._moved.get(key)
        if moved is None:
            moved = self._recorded_replacement().to(device=device, dtype=dtype)
            self._moved[key] = moved
        return moved

    def _recorded_replacement(self) -> torch.Tensor:
        assert self.replacement is not None, "only a mode that reads recorded outputs uses them"
        return self.replacement

    def cells(self, window: SequenceWindow, rows: int, call_length: int, device) -> torch.Tensor | None:
        """``[rows, call_length]`` bool: which (statement, column) of the current call this edit
        changes (None: every one). Positions are statement positions: counted in each row's own
        tokens (its real tokens under the attention mask, so left padding is skipped), negative
        ones from the row's last token."""
        positions = self.intervention.positions
        if positions is None:
            return None
        real = statement_tokens(window, self.group.rows, rows, window.total_for(call_length), device)
        rank = real.long().cumsum(dim=1) - 1  # the statement position of each real column
        length = real.sum(dim=1, keepdim=True)
        selected = torch.zeros_like(real)
        for p in positions:
            selected |= real & (rank == (p if p >= 0 else length + p))
        return selected[:, window.offset:window.offset + call_length]

    def apply(self, edited: torch.Tensor, original: torch.Tensor, window: SequenceWindow) -> None:
        """Write this edit into ``edited`` ``[B, T_call, H*D]`` (``original`` is the unedited input)."""
        iv = self.intervention
        rows = self.group.rows
        n_rows = len(range(*rows.indices(edited.shape[0])))
        call_length = edited.shape[1]
        cells = self.cells(window, n_rows, call_length, edited.device)
        columns = slice(None)
        recorded = None
        if self.mode.positional(iv.per_position):
            kept = self._aligned_length(window, call_length, n_rows)
            if kept == 0:
                return
            columns = slice(0, kept)
            recorded = self.replacement_on(edited.device, edited.dtype)[..., window.offset:window.offset + kept, :]
            if cells is not None:
                cells = cells[:, :kept]
        elif self.replacement is not None:
            recorded = self.replacement_on(edited.device, edited.dtype)
        new = self.mode.replace(original[rows, columns, self.slice], iv.value, recorded)
        if cells is not None:
            new = torch.where(cells.unsqueeze(-1), new, edited[rows, columns, self.slice])
        edited[rows, columns, self.slice] = new

    def _aligned_length(self, window: SequenceWindow, call_length: int, n_rows: int) -> int:
        """Per-position mean and resample: position ``a`` of the target takes position ``a`` of the
        reference/source. How many of the call's columns have one (positions beyond the
        reference, tokens generated later, are left as they are)."""
        iv = self.intervention
        replacement = self._recorded_replacement()
        reference_length = replacement.shape[-2]
        total = window.total_for(call_length)
        what = "resample source" if self.mode.needs_source else "per-position mean reference"
        if window.offset == 0 and total != reference_length:
            raise InputError(
                f"{iv.describe()}: the {what} has {reference_length} tokens but the statement it is applied "
                f"to has {total}; use statements of the same token length"
            )
        if self.mode.needs_source:
            if replacement.shape[0] not in (1, n_rows):
                raise InputError(
                    f"{iv.describe()}: the resample source has {replacement.shape[0]} statements, "
                    f"the batch has {n_rows}; pass one source statement or one per statement"
                )
            self._check_padding(window, self.group.rows)
        return max(0, min(call_length, reference_length - window.offset))

    def _check_padding(self, window: SequenceWindow, rows: slice) -> None:
        if window.offset != 0 or window.attention_mask is None:
            return
        source = self.group.source
        assert source is not None, "a resample edit was prepared from its source's outputs"
        source_lengths = source.lengths
        if self.group.source_rows is not None:
            source_lengths = source_lengths[self.group.source_rows]
        target_lengths = window.attention_mask[rows].sum(dim=1).cpu()
        if source_lengths.numel() == 1:
            source_lengths = source_lengths.expand_as(target_lengths)
        if not torch.equal(source_lengths.cpu(), target_lengths):
            raise InputError(
                f"{self.intervention.describe()}: resample source statements have token lengths "
                f"{source_lengths.tolist()} but the statements they replace have {target_lengths.tolist()}; "
                "each source must have the same token length as its target"
            )


class _LayerEditor:
    """The forward pre-hook of one layer's ``o_proj``."""

    def __init__(self, edits: list[_PreparedEdit], window: SequenceWindow):
        self.edits = edits
        self.window = window

    def __call__(self, module, args):
        original = args[0]
        edited = original.clone()
        for edit in self.edits:
            edit.apply(edited, original, self.window)
        return (edited,) + tuple(args[1:])


def _window_tracker(window: SequenceWindow, interventions=()):
    """Pre-hook for the decoder stack (:func:`~finwidget.model_parts.decoder_stack`): record the
    call's place in the sequence and refuse positions outside a statement before the model runs."""

    def hook(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        offset = 0
        if cache is not None and hasattr(cache, "get_seq_length"):
            offset = int(cache.get_seq_length())
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        call_length = int(tokens.shape[1]) if tokens is not None else 0
        window.offset = offset
        window.total = offset + call_length
        mask = kwargs.get("attention_mask")
        window.attention_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        window.growing = cache is not None
        if any(iv.positions is not None for iv in interventions) and tokens is not None:
            n_rows = int(tokens.shape[0])
            real = statement_tokens(window, slice(None), n_rows, window.total, "cpu")
            check_positions(interventions, real.sum(dim=1).tolist(), growing=window.growing)

    return hook


def _overflow_guard(groups: list[RowGroup]):
    """Forward pre-hook for the final norm: a :class:`~finwidget.errors.NonFiniteError` when the
    residual stream ``[B, T, E]`` is too large for the norm to square in float32 (what RMSNorm and
    LayerNorm compute), naming the intervention set of the rows concerned. Without it, an edited
    head output of ~1e20 or more makes the norm's mean square infinite, the normed stream 0 and
    every logit 0: a logit difference of exactly 0, silently wrong."""

    def hook(module, args):
        hidden = args[0] if args else None
        if not isinstance(hidden, torch.Tensor):
            return
        mean_square = hidden.float().pow(2).mean(dim=-1)
        finite = torch.isfinite(mean_square)
        if bool(finite.all()):
            return
        bad_rows = (~finite).reshape(finite.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
        named = []
        for group in groups:
            rows = range(*group.rows.indices(finite.shape[0]))
            if any(r in rows for r in bad_rows):
                named.append(repr(group.interventions))
        peak = float(hidden.detach().abs().float().max())
        raise NonFiniteError(
            f"the residual stream reached {peak:.3g} with {', '.join(named) or 'the interventions'}: too large for "
            "the model's final norm to square in float32, so the answer would be 0 or NaN; use a smaller value"
        )

    return hook


def install_edits(model, groups: list[RowGroup], window: SequenceWindow, track_window: bool = True) -> list:
    """Register the pre-hooks for ``groups``; returns their handles (the caller removes them).

    If registering fails halfway, the hooks already registered are removed before raising.
    """
    geometry = ModelGeometry.of(model)
    by_layer: dict[int, list[_PreparedEdit]] = {}
    for group in groups:
        for iv in group.interventions:
            by_layer.setdefault(iv.layer, []).append(_PreparedEdit(iv, geometry, group))
    handles = []
    try:
        handles.append(final_norm(model).register_forward_pre_hook(_overflow_guard(groups)))
        if track_window:
            every = [iv for group in groups for iv in group.interventions]
            handles.append(decoder_stack(model).register_forward_pre_hook(_window_tracker(window, every),
                                                                          with_kwargs=True))
        handles += hook_head_outputs(model, sorted(by_layer), lambda layer: _LayerEditor(by_layer[layer], window))
    except BaseException:
        remove_hooks(handles)
        raise
    return handles


def resolve_head_outputs(model, value, layers, what: str) -> HeadOutputs:
    """``value`` as recorded head outputs: a :class:`HeadOutputs` or a batch to record now."""
    if isinstance(value, HeadOutputs):
        missing = sorted(set(layers) - set(value.per_layer))
        if missing:
            raise InputError(f"the {what} head outputs were not recorded for layers {missing}")
        if value.num_rows == 0:
            raise InputError(f"the {what} set is empty; pass at least one statement")
        return value
    return HeadOutputs.record(model, value, layers=layers, what=what)


def check_needs(interventions: InterventionSet, reference, source) -> None:
    """An :class:`InputError` naming the mode, the argument and the heads when ``reference`` /
    ``source`` is missing but a mode of the set reads it."""
    for given, needs in ((reference, "needs_reference"), (source, "needs_source")):
        lacking = [iv for iv in interventions if getattr(iv.intervention_mode, needs)] if given is None else []
        if lacking:
            mode = lacking[0].intervention_mode
            raise InputError(f"mode {mode.name!r} needs {mode.what_it_needs()} for {[iv.describe() for iv in lacking]}")


class apply_interventions:
    """Context manager: ``with apply_interventions(model, interventions, reference=..., source=...): ...``.

    Args:
        model: a Hugging Face causal LM (Qwen2/Llama-style; see :mod:`finwidget.model_parts`).
        interventions: an :class:`InterventionSet` (or anything its constructor accepts).
        reference: for ``"mean"`` interventions: an encoded batch / token ids of the
            reference statements, or :class:`HeadOutputs` recorded from them.
        source: for ``"resample"`` interventions: one statement (or one per row of the
            batch it will be applied to), as a batch / token ids / :class:`HeadOutputs`.

    Works with ``model(...)`` and ``model.generate(...)`` (prefill and every decode step),
    left-padded batches, and models dispatched over devices by accelerate.
    """

    def __init__(self, model, interventions, reference=None, source=None):
        if not isinstance(interventions, InterventionSet):
            interventions = InterventionSet(interventions)
        interventions.validate_for(model)
        check_values_fit(interventions, model)
        check_needs(interventions, reference, source)
        self.model = model
        self.interventions = interventions
        self._reference = reference
        self._source = source
        self._handles: list | None = None
        self.window = SequenceWindow()

    def __enter__(self):
        if self._handles is not None:
            raise CaptureStateError("this intervention context is already active; enter a new one instead")
        iset = self.interventions
        reference = source = None
        if iset.needs_reference:
            layers = {iv.layer for iv in iset if iv.needs_reference}
            reference = resolve_head_outputs(self.model, self._reference, layers, "reference")
        if iset.needs_source:
            layers = {iv.layer for iv in iset if iv.needs_source}
            source = resolve_head_outputs(self.model, self._source, layers, "resample source")
        group = RowGroup(rows=slice(None), interventions=iset, reference=reference, source=source)
        self._handles = install_edits(self.model, [group], self.window)
        return self

    def __exit__(self, *exc):
        handles, self._handles = self._handles, None
        remove_hooks(handles or ())
        return False

    def remove(self) -> None:
        """Remove the hooks now (same as leaving the ``with`` block)."""
        self.__exit__(None, None, None)


provide_applier(apply_interventions)
