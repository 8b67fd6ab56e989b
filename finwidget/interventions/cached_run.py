"""The exact fast path: re-run only the layers after an intervention, from a cached clean run.

:class:`CachedRun` runs the model once on a batch and keeps the residual stream entering
every decoder layer. An intervention set whose earliest layer is ``l`` cannot change
anything before layer ``l``, so its result is computed by running layers ``l .. L-1``
from the cached input of layer ``l`` (with the same rotary position embeddings and
attention mask the full forward builds), then the final norm and LM head at the answer
position only. This is the same computation as a full forward with the interventions
applied (tests compare them), at a fraction of the cost for later layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from finwidget.errors import InputError, UnsupportedModelError
from finwidget.interventions.applying import (
    RowGroup,
    SequenceWindow,
    check_needs,
    check_positions,
    check_values_fit,
    install_edits,
)
from finwidget.interventions.cancel import RunCancelled
from finwidget.interventions.head_outputs import HeadOutputs, check_token_ids, coerce_batch
from finwidget.interventions.layer_shortcuts import (
    continue_from_attention_output,
    last_position_output,
    supports_shortcuts,
)
from finwidget.interventions.spec import InterventionSet
from finwidget.model_parts import (
    ModelGeometry,
    decoder_layers,
    decoder_stack,
    final_norm,
    hook_head_outputs,
    remove_hooks,
    rotary_embedding,
    unembedding,
)
from finwidget.task import EarningsTask, Prediction, check_finite_answer, eval_mode, model_device


def statement_texts(statements) -> list[str] | None:
    """Texts from a str, a list of str, or objects with a ``.text`` (demo ``Statement``); None otherwise."""
    if isinstance(statements, str):
        return [statements]
    if isinstance(statements, (list, tuple)) and statements and all(
        isinstance(s, str) or hasattr(s, "text") for s in statements
    ):
        return [s if isinstance(s, str) else s.text for s in statements]
    return None


def encode_statements(task: EarningsTask | None, statements, device, what: str = "statements") -> dict[str, torch.Tensor]:
    """An encoded, left-padded batch from texts / ``Statement`` objects / an encoded batch / token ids."""
    if isinstance(statements, (list, tuple)) and len(statements) == 0:
        raise InputError(f"{what}: the list is empty; pass at least one statement")
    texts = statement_texts(statements)
    if texts is not None:
        if task is None:
            raise InputError(f"{what} given as text need a task (EarningsTask) to be encoded")
        return task.encode(texts, device=device)
    batch = coerce_batch(statements, what)
    return {key: value.to(device) for key, value in batch.items()}


class _answer_position:
    """Context: tell intervention hooks that the current call covers only the last position."""

    def __init__(self, window: SequenceWindow | None, length: int):
        self.window, self.length = window, length

    def __enter__(self):
        if self.window is not None:
            self.saved = self.window.offset
            self.window.offset = self.length - 1
        return self

    def __exit__(self, *exc):
        if self.window is not None:
            self.window.offset = self.saved
        return False


def default_max_batch_tokens(device: torch.device) -> int:
    """How many tokens to run in one call when batching many intervention sets.

    On a CPU, a batch costs about as much as its rows run one by one, so there is
    nothing to gain (and memory to lose): 1 set per call. On accelerators, batching
    fills the device.
    """
    return 0 if torch.device(device).type == "cpu" else 32768


class CachedRun:
    """A clean run of ``model`` on a batch, cached so intervened runs only redo what changes.

    Args:
        model: a Hugging Face causal LM (Qwen2/Llama-style layout).
        task: the :class:`~finwidget.task.EarningsTask` that encodes statements and reads answers.
        batch: statements (str, list of str, demo ``Statement`` objects) or an encoded
            left-padded batch ``{"input_ids": [B, T], "attention_mask": [B, T]}``.
        cache_head_outputs: also keep every layer's ``o_proj`` input (as much memory again
            as the residual stream) so a re-run skips the intervened layer's attention;
            False halves the cache at a small cost in speed.

    Attributes:
        clean: ``list[Prediction]`` of the clean run.
        clean_logit_diff: ``[B]`` float32 tensor.
        residuals: ``list`` of ``L`` tensors ``[B, T, E]`` (model dtype), the input of each layer (shape letters: :mod:`finwidget.model_parts`).
        head_outputs: ``list`` of ``L`` tensors ``[B, T, H*D]``, each layer's ``o_proj`` input
            (``None`` entries when ``cache_head_outputs=False``).
        batch: the encoded batch.
    """

    def __init__(self, model, task: EarningsTask, batch, cache_head_outputs: bool = True):
        self.model = model
        self.task = task
        self.cache_head_outputs = bool(cache_head_outputs)
        self.geometry = ModelGeometry.of(model)
        self.batch = encode_statements(task, batch, model_device(model), "batch")
        check_token_ids(model, self.batch["input_ids"], "batch")
        self._layers = decoder_layers(model)
        residuals: list[torch.Tensor | None] = [None] * self.geometry.num_layers
        self.head_outputs: list[torch.Tensor | None] = [None] * self.geometry.num_layers
        handles = []

        def keeper(index):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                residuals[index] = hidden.detach()
            return hook

        def head_keeper(index):
            def hook(module, args):
                self.head_outputs[index] = args[0].detach()
            return hook

        try:
            for index, layer in enumerate(self._layers):  # each layer's first input is the residual stream
                handles.append(layer.register_forward_pre_hook(keeper(index), with_kwargs=True))
            if self.cache_head_outputs:
                handles += hook_head_outputs(model, range(self.geometry.num_layers), head_keeper)
            with torch.inference_mode(), eval_mode(model):
                out = model(**self.batch, use_cache=False, logits_to_keep=1)
        finally:
            remove_hooks(handles)
        skipped = [index for index, hidden in enumerate(residuals) if hidden is None]
        if skipped:
            raise UnsupportedModelError(f"decoder layers {skipped} did not run in the clean forward pass; "
                                        "the exact fast path needs every layer's input")
        self.residuals: list[torch.Tensor] = [hidden for hidden in residuals if hidden is not None]
        self.clean_answer_logits = out.logits[:, -1, :].detach()
        self.clean_logit_diff = check_finite_answer(self._logit_diff(self.clean_answer_logits),
                                                    "in the clean run (no intervention)")
        self.clean: list[Prediction] = self._predictions(self.clean_logit_diff)

    # ------------------------------------------------------------ shape
    @property
    def batch_size(self) -> int:
        return int(self.batch["input_ids"].shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.batch["input_ids"].shape[1])

    # ------------------------------------------------------------ readout
    def _logit_diff(self, answer_logits: torch.Tensor) -> torch.Tensor:
        if self.task is not None:
            return self.task.logit_diff(answer_logits).detach().float().cpu()
        raise InputError("CachedRun needs a task to read the logit difference")

    @property
    def _labels(self) -> tuple[str, str]:
        return getattr(self.task, "labels", ("increase", "decrease"))

    def _predictions(self, diffs: torch.Tensor) -> list[Prediction]:
        lengths = self.batch["attention_mask"].sum(dim=1).cpu()
        return [
            Prediction(
                logit_diff=float(d), p_increase=float(torch.sigmoid(d)),
                label=self._labels[0] if d > 0 else self._labels[1], n_tokens=int(n),
            )
            for d, n in zip(diffs, lengths)
        ]

    # ------------------------------------------------------------ re-running
    def resume(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
               head_outputs: torch.Tensor | None = None, window: SequenceWindow | None = None,
               should_stop=None) -> torch.Tensor:
        """Run layers ``layer .. L-1`` from ``hidden`` ``[R, T, E]`` (the input of ``layer``);
        return ``[R, V]`` logits at the answer position (last column).

        ``attention_mask`` ``[R, T]`` defaults to the cached batch's, repeated to ``R`` rows.
        ``head_outputs`` ``[R, T, H*D]``: ``layer``'s clean ``o_proj`` input, when
        ``hidden`` is the clean input of ``layer`` (lets the re-run skip that layer's attention).
        ``window``: the sequence window intervention hooks read (moved to the answer position
        while the last layer runs for it alone).
        Hooks registered on ``o_proj`` (interventions) fire as in a full forward.
        ``should_stop``: polled before each layer; True raises
        :class:`~finwidget.interventions.cancel.RunCancelled` (the caller's ``finally``
        removes its hooks).
        """
        self.geometry.check_layer(layer)
        model = self.model
        rows, length = hidden.shape[0], hidden.shape[1]
        if attention_mask is None:
            attention_mask = self.batch["attention_mask"]
            if rows % attention_mask.shape[0]:
                raise InputError(f"{rows} rows is not a multiple of the batch's {attention_mask.shape[0]}")
            attention_mask = attention_mask.repeat(rows // attention_mask.shape[0], 1)
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        config = decoder_stack(model).config
        implementation = getattr(config, "_attn_implementation", None)
        last = self.geometry.num_layers - 1
        position_ids = torch.arange(length, device=hidden.device).unsqueeze(0)
        # eval_mode walks every module; skip it when the model is already in eval mode (every click)
        with torch.inference_mode(), (eval_mode(model) if model.training else contextlib.nullcontext()):
            mask_kwargs = {
                "config": config, "inputs_embeds": hidden, "attention_mask": attention_mask,
                "cache": None, "position_ids": position_ids,
            }
            masks = {"full_attention": create_causal_mask(**mask_kwargs)}
            layer_types = getattr(config, "layer_types", None) or ["full_attention"] * self.geometry.num_layers
            if "sliding_attention" in layer_types:
                masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
            position_embeddings = rotary_embedding(model)(hidden, position_ids)
            for index in range(layer, last + 1):
                if should_stop is not None and should_stop():
                    raise RunCancelled(f"the re-run was cancelled before layer {index}")
                module = self._layers[index]
                shortcut = supports_shortcuts(module, implementation)
                mask = masks[layer_types[index]]
                if index == layer and head_outputs is not None and shortcut:
                    if index == last:
                        with _answer_position(window, length):
                            hidden = continue_from_attention_output(module, hidden[:, -1:], head_outputs[:, -1:])
                    else:
                        hidden = continue_from_attention_output(module, hidden, head_outputs)
                elif index == last and shortcut and (mask is None or mask.dim() == 4):
                    with _answer_position(window, length):
                        hidden = last_position_output(module, hidden, mask, position_embeddings)
                else:
                    hidden = module(
                        hidden,
                        attention_mask=mask,
                        position_embeddings=position_embeddings,
                        position_ids=position_ids,
                        cache=None,
                        use_cache=False,
                    )
                    if isinstance(hidden, tuple):
                        hidden = hidden[0]
            answer = final_norm(model)(hidden[:, -1:, :])
            logits = unembedding(model)(answer)
        return logits[:, -1, :]

    def _check_positions(self, interventions: InterventionSet) -> None:
        """Positions are statement positions: each must be inside every statement of the batch."""
        check_positions(interventions, self.batch["attention_mask"].sum(dim=1).tolist())

    def _head_outputs(self, value, layers, what: str) -> HeadOutputs | None:
        if value is None:
            return None
        if isinstance(value, HeadOutputs):
            missing = sorted(set(layers) - set(value.per_layer))
            if missing:
                raise InputError(f"the {what} head outputs were not recorded for layers {missing}")
            return value
        batch = encode_statements(self.task, value, model_device(self.model), what)
        return HeadOutputs.record(self.model, batch, layers=layers, what=what)

    def logit_diffs(
        self,
        intervention_sets: Sequence[InterventionSet],
        reference=None,
        source=None,
        max_batch_tokens: int | None = None,
        progress=None,
        should_stop=None,
    ) -> torch.Tensor:
        """``[n_sets, B]`` float32 logit differences, one row per intervention set.

        Sets that start at the same layer are run together, ``max_batch_tokens`` tokens
        per call (default: 1 set per call on CPU, 32768 tokens on accelerators).
        ``reference``/``source`` feed ``"mean"``/``"resample"`` modes (statements,
        a batch, or :class:`HeadOutputs`); they are recorded once for all sets.
        ``progress``: an object with ``update(n)`` (e.g. a tqdm bar), called per set.
        ``should_stop``: polled between layers; True raises ``RunCancelled``.
        """
        if isinstance(intervention_sets, (InterventionSet, str)) or not hasattr(intervention_sets, "__iter__"):
            raise InputError("logit_diffs takes a list of intervention sets; for one set use predict(set) "
                             "or logit_diffs([set])")
        sets = [s if isinstance(s, InterventionSet) else InterventionSet(s) for s in intervention_sets]
        for s in sets:
            s.validate_for(self.geometry)
            check_values_fit(s, self.model)
            check_needs(s, reference, source)
            self._check_positions(s)
        reference_layers = sorted({iv.layer for s in sets for iv in s if iv.needs_reference})
        source_layers = sorted({iv.layer for s in sets for iv in s if iv.needs_source})
        reference_outputs = self._head_outputs(reference, reference_layers, "reference") if reference_layers else None
        source_outputs = self._head_outputs(source, source_layers, "resample source") if source_layers else None

        self._check_lengths(sets, reference_outputs, source_outputs)
        if max_batch_tokens is None:
            max_batch_tokens = default_max_batch_tokens(self.clean_answer_logits.device)
        sets_per_call = max(1, max_batch_tokens // (self.batch_size * self.seq_len))
        result = torch.empty((len(sets), self.batch_size), dtype=torch.float32)
        by_layer: dict[int | None, list[int]] = {}
        for index, s in enumerate(sets):
            by_layer.setdefault(s.first_layer, []).append(index)
        for first_layer, indices in sorted(by_layer.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
            if first_layer is None:
                result[indices] = self.clean_logit_diff
                if progress is not None:
                    progress.update(len(indices))
                continue
            for start in range(0, len(indices), sets_per_call):
                chunk = indices[start:start + sets_per_call]
                result[chunk] = self._run_chunk(
                    first_layer, [sets[i] for i in chunk], reference_outputs, source_outputs, should_stop
                ).view(len(chunk), self.batch_size)
                if progress is not None:
                    progress.update(len(chunk))
        return result

    def _check_lengths(self, sets, reference_outputs, source_outputs) -> None:
        """Resample sources and per-position references must line up with the batch, token by token."""
        if source_outputs is not None:
            lengths = source_outputs.lengths
            if source_outputs.num_rows not in (1, self.batch_size):
                raise InputError(
                    f"the resample source has {source_outputs.num_rows} statements, the batch has "
                    f"{self.batch_size}; pass one source statement or one per statement"
                )
            targets = self.batch["attention_mask"].sum(dim=1).cpu()
            if source_outputs.width != self.seq_len or not torch.equal(lengths.expand_as(targets), targets):
                raise InputError(
                    f"resample source statements have token lengths {lengths.tolist()} but the statements they "
                    f"replace have {targets.tolist()}; each source must have the same token length as its target"
                )
        per_position = any(iv.per_position for s in sets for iv in s)
        if per_position and reference_outputs is not None:
            targets = self.batch["attention_mask"].sum(dim=1).cpu()
            if reference_outputs.width != self.seq_len or not bool((targets == self.seq_len).all()):
                raise InputError(
                    f"a per-position mean needs reference and target statements of the same token length; the "
                    f"reference has {reference_outputs.width} tokens, the statements {targets.tolist()}"
                )

    def _run_chunk(self, first_layer, sets, reference_outputs, source_outputs, should_stop=None) -> torch.Tensor:
        b = self.batch_size
        groups = [
            RowGroup(rows=slice(g * b, (g + 1) * b), interventions=s, reference=reference_outputs, source=source_outputs)
            for g, s in enumerate(sets)
        ]
        mask = self.batch["attention_mask"].repeat(len(sets), 1)
        window = SequenceWindow(offset=0, total=self.seq_len, attention_mask=mask)
        hidden = self.residuals[first_layer]
        head_outputs = self.head_outputs[first_layer]
        if len(sets) > 1:
            hidden = hidden.repeat(len(sets), 1, 1)
            if head_outputs is not None:
                head_outputs = head_outputs.repeat(len(sets), 1, 1)
        handles = install_edits(self.model, groups, window, track_window=False)
        try:
            logits = self.resume(first_layer, hidden, mask, head_outputs=head_outputs, window=window,
                                 should_stop=should_stop)
        finally:
            for handle in handles:
                handle.remove()
        diffs = self._logit_diff(logits)
        if not bool(torch.isfinite(diffs).all()):
            for g, s in enumerate(sets):
                check_finite_answer(diffs[g * b:(g + 1) * b], f"with {s!r}")
        return diffs

    def predict(self, interventions, reference=None, source=None, should_stop=None) -> list[Prediction]:
        """Predictions with ``interventions`` applied (an :class:`InterventionSet`);
        ``should_stop`` polled between layers (True raises ``RunCancelled``)."""
        if not isinstance(interventions, InterventionSet):
            interventions = InterventionSet(interventions)
        diffs = self.logit_diffs([interventions], reference=reference, source=source, should_stop=should_stop)
        return self._predictions(diffs[0])

    def effects(self, interventions, reference=None, source=None):
        """One row per statement: the answer with ``interventions`` next to the clean one.

        Returns a DataFrame with ``statement, logit_diff, p_increase, label,
        clean_logit_diff, clean_label, change`` (``logit_diff - clean_logit_diff``) and
        ``flipped`` (the label changed).
        """
        import pandas as pd

        predictions = self.predict(interventions, reference=reference, source=source)
        frame = pd.DataFrame([p.to_dict() for p in predictions]).drop(columns="n_tokens")
        frame.insert(0, "statement", range(len(predictions)))
        frame["clean_logit_diff"] = [p.logit_diff for p in self.clean]
        frame["clean_label"] = [p.label for p in self.clean]
        frame["change"] = frame["logit_diff"] - frame["clean_logit_diff"]
        frame["flipped"] = frame["label"] != frame["clean_label"]
        return frame

    def predict_many(self, intervention_sets, reference=None, source=None, max_batch_tokens=None) -> list[list[Prediction]]:
        """``predict`` for many sets at once (batched where the device benefits)."""
        diffs = self.logit_diffs(intervention_sets, reference=reference, source=source, max_batch_tokens=max_batch_tokens)
        return [self._predictions(row) for row in diffs]
