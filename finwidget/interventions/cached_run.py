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

from collections.abc import Sequence

import torch

from finwidget.errors import InputError, LocationError
from finwidget.interventions.anatomy import HeadGeometry, decoder_layers
from finwidget.interventions.applying import RowGroup, SequenceWindow, check_needs, install_edits
from finwidget.interventions.head_outputs import HeadOutputs, coerce_batch
from finwidget.interventions.spec import InterventionSet
from finwidget.task import EarningsTask, Prediction, eval_mode, model_device


def statement_texts(statements) -> list[str] | None:
    """Texts from a str, a list of str, or objects with a ``.text`` (demo ``Statement``); None otherwise."""
    if isinstance(statements, str):
        return [statements]
    if isinstance(statements, (list, tuple)) and statements and all(
        isinstance(s, str) or hasattr(s, "text") for s in statements
    ):
        return [s if isinstance(s, str) else s.text for s in statements]
    return None


def encode_statements(task: EarningsTask, statements, device, what: str = "statements") -> dict[str, torch.Tensor]:
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

    Attributes:
        clean: ``list[Prediction]`` of the clean run.
        clean_logit_diff: ``[B]`` float32 tensor.
        residuals: ``list`` of ``L`` tensors ``[B, T, hidden]`` (model dtype), the input of each layer.
        batch: the encoded batch.
    """

    def __init__(self, model, task: EarningsTask, batch):
        self.model = model
        self.task = task if task is not None else None
        self.geometry = HeadGeometry.of(model)
        self.batch = encode_statements(task, batch, model_device(model), "batch")
        self._layers = decoder_layers(model)
        self.residuals: list[torch.Tensor] = [None] * self.geometry.num_layers
        handles = []

        def keeper(index):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                self.residuals[index] = hidden.detach()
            return hook

        try:
            for index, layer in enumerate(self._layers):
                handles.append(layer.register_forward_pre_hook(keeper(index), with_kwargs=True))
            with torch.inference_mode(), eval_mode(model):
                out = model(**self.batch, use_cache=False, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
        self.clean_answer_logits = out.logits[:, -1, :].detach()
        self.clean_logit_diff = self._logit_diff(self.clean_answer_logits)
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

    def _predictions(self, diffs: torch.Tensor) -> list[Prediction]:
        lengths = self.batch["attention_mask"].sum(dim=1).cpu()
        return [
            Prediction(
                logit_diff=float(d), p_increase=float(torch.sigmoid(d)),
                label="increase" if d > 0 else "decrease", n_tokens=int(n),
            )
            for d, n in zip(diffs, lengths)
        ]

    # ------------------------------------------------------------ re-running
    def resume(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run layers ``layer .. L-1`` from ``hidden`` ``[R, T, hidden]`` (the input of ``layer``);
        return ``[R, vocab]`` logits at the answer position (last column).

        ``attention_mask`` ``[R, T]`` defaults to the cached batch's, repeated to ``R`` rows.
        Hooks registered on the model (interventions) fire as in a full forward.
        """
        self.geometry.check_layer(layer)
        model = self.model
        base = model.model
        rows = hidden.shape[0]
        if attention_mask is None:
            attention_mask = self.batch["attention_mask"]
            if rows % attention_mask.shape[0]:
                raise InputError(f"{rows} rows is not a multiple of the batch's {attention_mask.shape[0]}")
            attention_mask = attention_mask.repeat(rows // attention_mask.shape[0], 1)
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        config = base.config
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        with torch.inference_mode(), eval_mode(model):
            mask_kwargs = {
                "config": config, "inputs_embeds": hidden, "attention_mask": attention_mask,
                "cache": None, "position_ids": position_ids,
            }
            masks = {"full_attention": create_causal_mask(**mask_kwargs)}
            layer_types = getattr(config, "layer_types", None) or ["full_attention"] * self.geometry.num_layers
            if "sliding_attention" in layer_types:
                masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
            position_embeddings = base.rotary_emb(hidden, position_ids)
            for index in range(layer, self.geometry.num_layers):
                hidden = self._layers[index](
                    hidden,
                    attention_mask=masks[layer_types[index]],
                    position_embeddings=position_embeddings,
                    position_ids=position_ids,
                    cache=None,
                    use_cache=False,
                )
                if isinstance(hidden, tuple):
                    hidden = hidden[0]
            last = base.norm(hidden[:, -1:, :])
            logits = model.get_output_embeddings()(last)
        return logits[:, -1, :]

    def _check_positions(self, interventions: InterventionSet) -> None:
        for iv in interventions:
            for p in iv.positions or ():
                if not -self.seq_len <= p < self.seq_len:
                    raise LocationError(
                        f"position {p} of {iv.describe()} is outside the {self.seq_len}-token batch "
                        f"(valid: {-self.seq_len} to {self.seq_len - 1})"
                    )

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
    ) -> torch.Tensor:
        """``[n_sets, B]`` float32 logit differences, one row per intervention set.

        Sets that start at the same layer are run together, ``max_batch_tokens`` tokens
        per call (default: 1 set per call on CPU, 32768 tokens on accelerators).
        ``reference``/``source`` feed ``"mean"``/``"resample"`` modes (statements,
        a batch, or :class:`HeadOutputs`); they are recorded once for all sets.
        ``progress``: an object with ``update(n)`` (e.g. a tqdm bar), called per set.
        """
        sets = [s if isinstance(s, InterventionSet) else InterventionSet(s) for s in intervention_sets]
        for s in sets:
            s.validate_for(self.geometry)
            check_needs(s, reference, source)
            self._check_positions(s)
        reference_layers = sorted({iv.layer for s in sets for iv in s if iv.needs_reference})
        source_layers = sorted({iv.layer for s in sets for iv in s if iv.needs_source})
        reference_outputs = self._head_outputs(reference, reference_layers, "reference") if reference_layers else None
        source_outputs = self._head_outputs(source, source_layers, "resample source") if source_layers else None

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
                    first_layer, [sets[i] for i in chunk], reference_outputs, source_outputs
                ).view(len(chunk), self.batch_size)
                if progress is not None:
                    progress.update(len(chunk))
        return result

    def _run_chunk(self, first_layer, sets, reference_outputs, source_outputs) -> torch.Tensor:
        b = self.batch_size
        groups = [
            RowGroup(rows=slice(g * b, (g + 1) * b), interventions=s, reference=reference_outputs, source=source_outputs)
            for g, s in enumerate(sets)
        ]
        mask = self.batch["attention_mask"].repeat(len(sets), 1)
        window = SequenceWindow(offset=0, total=self.seq_len, attention_mask=mask)
        hidden = self.residuals[first_layer]
        if len(sets) > 1:
            hidden = hidden.repeat(len(sets), 1, 1)
        handles = install_edits(self.model, groups, window, track_window=False)
        try:
            logits = self.resume(first_layer, hidden, mask)
        finally:
            for handle in handles:
                handle.remove()
        return self._logit_diff(logits)

    def predict(self, interventions, reference=None, source=None) -> list[Prediction]:
        """Predictions with ``interventions`` applied (an :class:`InterventionSet`)."""
        if not isinstance(interventions, InterventionSet):
            interventions = InterventionSet(interventions)
        return self._predictions(self.logit_diffs([interventions], reference=reference, source=source)[0])

    def predict_many(self, intervention_sets, reference=None, source=None, max_batch_tokens=None) -> list[list[Prediction]]:
        """``predict`` for many sets at once (batched where the device benefits)."""
        diffs = self.logit_diffs(intervention_sets, reference=reference, source=source, max_batch_tokens=max_batch_tokens)
        return [self._predictions(row) for row in diffs]
