"""What the explorer shows about one statement, computed on demand from one clean run.

:class:`ExplorerSession` is the glue between the widget and the analysis layer: one
forward pass is recorded with :func:`~finwidget.capture.capture.capture_attention`
(post-RoPE queries/keys only) while :class:`~finwidget.interventions.cached_run.CachedRun`
caches the residual stream for ablations; the statement is read with
:func:`~finwidget.statement.read_statement`. Attention is recomputed per head / per row
when a view asks for it; the full ``layers x heads x T x T`` tensor is never built.

Every method returns numpy arrays (float32) in the shapes its docstring states; the
widget encodes them with :mod:`finwidget.widgets.protocol`.
"""

from __future__ import annotations

import numpy as np
import torch

from finwidget.capture.capture import capture_attention
from finwidget.errors import InputError
from finwidget.interventions.cached_run import CachedRun
from finwidget.interventions.spec import HeadIntervention, InterventionSet
from finwidget.statement import read_statement
from finwidget.task import EarningsTask, Prediction, context_length, model_device


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -(p * logs).sum(axis=-1)


class ExplorerSession:
    """One statement run through the model, ready to answer the explorer's questions.

    Args:
        model: a Hugging Face causal LM (Qwen2-style layout for ablations).
        tokenizer: its fast tokenizer.
        text: the statement (the task adds the question and answer prefix).
        task: the :class:`~finwidget.task.EarningsTask` (default: ``EarningsTask(tokenizer)``).
        reference: statements whose mean head outputs "mean" ablation uses (default:
            this statement, i.e. each head's output averaged over its tokens).
        truncate: drop tokens from the statement's start when the prompt is longer than
            the model's context (else a too-long statement raises ``InputError``).
        store_dtype: dtype to keep the recorded queries/keys in (default: the model's).
    """

    def __init__(
        self,
        model,
        tokenizer,
        text: str,
        task: EarningsTask | None = None,
        reference=None,
        truncate: bool = False,
        store_dtype: torch.dtype | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.task = task if task is not None else EarningsTask(tokenizer)
        self.text = text
        self.batch = self.task.encode(
            text, max_length=context_length(model), truncate=truncate, device=model_device(model)
        )
        with capture_attention(model, store_dtype=store_dtype) as capture:
            self.cached = CachedRun(model, self.task, self.batch)
        input_ids = self.batch["input_ids"][0].tolist()
        layout = read_statement(text, tokenizer, input_ids=input_ids, task=self.task)
        self._setup(capture, layout, num_kv_heads=capture.num_kv_heads, head_dim=capture.head_dim)
        self.reference = reference if reference is not None else self.batch
        self._clean = self.cached.clean[0]

    @classmethod
    def from_attention(
        cls, attention, layout, prediction: Prediction | None = None, model_name: str = "recorded attention"
    ) -> ExplorerSession:
        """A session that only *shows* attention already recorded (no model: no ablations,
        no logit lens, no direct contributions).

        Args:
            attention: anything ``finwidget.analysis.as_attention_source`` reads (a capture,
                ``hook.attention_weights``, ``{'layer_i': [B, H, T, T]}``, an
                ``output_attentions`` tuple); batch row 0, unpadded, is shown.
            layout: the ``read_statement`` layout of the same tokens.
            prediction: the model's prediction for the statement, if known.
        """
        from finwidget.analysis import as_attention_source

        source = as_attention_source(attention)
        if source.seq_len != layout.num_tokens:
            raise InputError(
                f"the attention covers {source.seq_len} tokens but the statement layout has "
                f"{layout.num_tokens}; pass the layout of exactly the tokens the model ran"
            )
        self = cls.__new__(cls)
        self.model = None
        self.tokenizer = None
        self.task = None
        self.text = layout.text
        self.batch = None
        self.cached = None
        self.reference = None
        self._clean = prediction
        self.model_name = model_name
        num_kv = int(getattr(source, "num_kv_heads", None) or source.num_heads)
        head_dim = int(getattr(source, "head_dim", 0) or 0)
        self._setup(source, layout, num_kv_heads=num_kv, head_dim=head_dim)
        return self

    def _setup(self, source, layout, num_kv_heads: int, head_dim: int) -> None:
        self.capture = source
        self.layout = layout
        self.num_layers = int(source.num_layers)
        self.num_heads = int(source.num_heads)
        self.num_kv_heads = int(num_kv_heads)
        self.head_dim = int(head_dim)
        self.seq_len = int(source.seq_len)
        self.layers = list(getattr(source, "layers", range(self.num_layers)))
        if self.layout.num_tokens != self.seq_len:
            raise InputError(
                f"the statement reader found {self.layout.num_tokens} tokens but the model ran "
                f"{self.seq_len}; the tokenizer and the task disagree"
            )
        self.answer_position = self.seq_len - 1
        self._answer_rows: np.ndarray | None = None
        self._predictions: dict[str, dict] = {}
        self.sweep_effect: np.ndarray | None = None  # [L, H] change in logit diff, after sweep()
        self.sweep_mode: str | None = None
        self._financial = self._financial_tokens()
        self._numbers = self.layout.token_mask(
            [s for s in self.layout.spans if s.kind == "number" and s.in_statement]
        )

    @property
    def can_intervene(self) -> bool:
        """Whether this session has the model (ablations, sweeps, logit lens)."""
        return self.cached is not None

    def _require_model(self, what: str) -> None:
        if self.cached is None:
            raise InputError(
                f"{what} needs the model: this explorer only shows recorded attention; "
                "use AttentionExplorer(model, tokenizer, text) to change heads"
            )

    def _check_layer_recorded(self, layer: int) -> None:
        if layer not in self.layers:
            raise InputError(f"layer {layer} was not recorded; recorded layers: {self.layers}")

    # ------------------------------------------------------------------ the statement
    def _financial_tokens(self) -> np.ndarray:
        """``[T]`` bool: tokens of financial terms, line item names and line items' numbers."""
        spans = [
            s
            for s in self.layout.spans
            if s.in_statement and (s.is_financial or (s.kind == "number" and s.line_item is not None))
        ]
        return self.layout.token_mask(spans)

    def selection_tokens(self, selection: list[int]) -> np.ndarray:
        """Span range ``[start, end)`` -> int64 token positions of those spans; ``[]`` -> empty."""
        if not selection:
            return np.zeros(0, dtype=np.int64)
        start, end = selection
        tokens = [t for s in self.layout.spans[start:end] for t in range(s.token_start, s.token_end)]
        return np.asarray(sorted(set(tokens)), dtype=np.int64)

    def selection_text(self, selection: list[int]) -> str:
        if not selection:
            return ""
        spans = self.layout.spans[selection[0] : selection[1]]
        return " ".join(self.layout.text[spans[0].char_start : spans[-1].char_end].split())

    # ------------------------------------------------------------------ attention
    def head_matrix(self, layer: int, head: int) -> np.ndarray:
        """``[T, T]`` float32 attention of one head (rows = queries, zero above the diagonal)."""
        self._check_layer_recorded(layer)
        return self.capture.attention(layer, head=head).numpy()

    def answer_rows(self) -> np.ndarray:
        """``[L, H, T]`` float32: every head's attention row at the answer position (cached)."""
        if self._answer_rows is None:
            rows = np.full((self.num_layers, self.num_heads, self.seq_len), np.nan, dtype=np.float32)
            for layer in self.layers:
                rows[layer] = self.capture.attention(layer, head=None, query=self.answer_position).numpy()
            self._answer_rows = rows
        return self._answer_rows

    def _heads_for(self, scope: str, layer=None, head=None, layer_range=None) -> dict[int, list[int]]:
        if scope == "focus":
            return {layer: [head]}
        if scope == "layer":
            return {layer: list(range(self.num_heads))}
        first, last = layer_range
        return {lay: list(range(self.num_heads)) for lay in range(first, last + 1)}

    def _from_rows(self, layer: int, heads: list[int], queries: np.ndarray) -> np.ndarray:
        """``[len(heads), T]``: mean over ``queries`` of each head's attention rows."""
        rows = self.capture.attention(layer, head=heads, query=queries.tolist())  # [h, q, T]
        return rows.mean(dim=1).numpy()

    def _to_columns(self, layer: int, heads: list[int], keys: np.ndarray) -> np.ndarray:
        """``[len(heads), T]``: for every query token, the attention it pays to ``keys``.

        Only queries at or after the first key can attend to it (causal), so only those
        rows are computed (a few heads at a time, ~64 MiB of rows at once).
        """
        out = np.zeros((len(heads), self.seq_len), dtype=np.float32)
        first = int(keys.min())
        queries = slice(first, self.seq_len)
        n_rows = self.seq_len - first
        key_index = torch.as_tensor(keys)
        per_chunk = max(1, (64 * 2**20) // (4 * n_rows * self.seq_len))
        for start in range(0, len(heads), per_chunk):
            chunk = heads[start : start + per_chunk]
            rows = self.capture.attention(layer, head=chunk, query=queries)  # [h, T - first, T]
            out[start : start + len(chunk), first:] = rows.index_select(2, key_index).sum(dim=2).numpy()
        return out

    def token_values(
        self, scope: str, selection: list[int], direction: str, layer=None, head=None, layer_range=None
    ) -> tuple[np.ndarray, str, str]:
        """Per-token attention for the statement view: ``([T] float32, reduce, label)``.

        direction "from": the mean attention row of the selection's tokens (or of the
        answer position without a selection), averaged over the heads in scope; spans
        *sum* their tokens (``reduce="sum"``). direction "to": for every token, the
        attention it pays to the selection, averaged over heads; spans *average* their
        tokens (``reduce="mean"``).
        """
        tokens = self.selection_tokens(selection)
        if tokens.size == 0:
            tokens = np.asarray([self.answer_position])
        heads = {
            lay: hs
            for lay, hs in self._heads_for(scope, layer, head, layer_range).items()
            if lay in self.layers
        }
        if not heads:
            raise InputError(f"no recorded layer in that range; recorded layers: {self.layers}")
        total = np.zeros(self.seq_len, dtype=np.float64)
        count = 0
        for lay, hs in heads.items():
            part = (
                self._from_rows(lay, hs, tokens) if direction == "from" else self._to_columns(lay, hs, tokens)
            )
            total += part.sum(axis=0)
            count += len(hs)
        values = (total / max(count, 1)).astype(np.float32)
        if scope == "focus":
            label = f"layer {layer} head {head}"
        elif scope == "layer":
            label = f"mean over the {self.num_heads} heads of layer {layer}"
        else:
            label = f"mean over the heads of layers {layer_range[0]}–{layer_range[1]}"
        return values, ("sum" if direction == "from" else "mean"), label

    # ------------------------------------------------------------------ grid measures
    def grid(self, measure: str, selection: list[int]) -> tuple[np.ndarray, str]:
        """``([L, H] float32, label)`` of one head measure."""
        tokens = self.selection_tokens(selection)
        what = f"“{self.selection_text(selection)}”" if tokens.size else "the numbers"
        if measure == "attention_to_selection":
            rows = self.answer_rows()
            mask = np.zeros(self.seq_len, dtype=bool)
            if tokens.size:
                mask[tokens] = True
            else:
                mask = self._numbers
            return rows[..., mask].sum(axis=-1), f"answer position's attention to {what}"
        if measure == "entropy":
            if tokens.size == 0:
                return _entropy(self.answer_rows()), "entropy (nats) of the answer position's attention"
            out = np.full((self.num_layers, self.num_heads), np.nan, dtype=np.float32)
            for layer in self.layers:
                rows = self.capture.attention(layer, head=None, query=tokens.tolist()).numpy()  # [H, q, T]
                out[layer] = _entropy(rows).mean(axis=-1)
            return out, f"entropy (nats) of the attention of {what}"
        if measure == "financial_focus":
            rows = self.answer_rows()
            return rows[..., self._financial].sum(
                axis=-1
            ), "answer position's attention to financial terms and line items"
        if measure == "direct_logit_diff":
            return self.direct_logit_diff(), "direct contribution to the logit difference"
        if measure == "ablation_effect":
            if self.sweep_effect is None:
                raise InputError("no ablation effects yet: press Sweep (or call explorer.sweep()) first")
            return (
                self.sweep_effect,
                f"change in logit difference when each head is ablated ({self.sweep_mode})",
            )
        raise InputError(f"unknown grid measure {measure!r}")

    def direct_logit_diff(self) -> np.ndarray:
        """``[L, H]`` float32 direct contribution of each head to the answer's logit difference."""
        from finwidget.widgets.analysis_glue import direct_head_contributions

        return direct_head_contributions(self)

    def logit_lens(self) -> np.ndarray:
        """``[L]`` float32 logit difference read out after each layer (final norm + unembedding)."""
        from finwidget.widgets.analysis_glue import logit_lens

        return logit_lens(self)

    # ------------------------------------------------------------------ flow
    def flow(self, selection: list[int]) -> dict:
        """The layer flow of the selection: where its attention goes in every layer.

        Returns ``{"spread": [L, S] float32, "selection_mass": [L] float32,
        "logit_lens": list of L floats (None where unavailable), "label": str}``: per
        layer, the selection's attention rows (the answer position's without a selection)
        summed per span and averaged over the layer's heads; the answer position's
        attention on the selection (on the numbers without one), mean over heads; the
        logit-lens logit difference after the layer.

        Only query rows of the selection are computed (``[H, |selection|, T]`` per layer),
        never a full ``T x T`` matrix, so this stays fast on long statements.
        """
        from finwidget.statement import aggregate_to_spans
        from finwidget.widgets.analysis_glue import AnalysisUnavailable

        tokens = self.selection_tokens(selection)
        queries = tokens if tokens.size else np.asarray([self.answer_position])
        spread = np.zeros((self.num_layers, self.layout.num_spans), dtype=np.float32)
        heads = list(range(self.num_heads))
        for layer in self.layers:
            per_token = self._from_rows(layer, heads, queries).mean(axis=0)
            spread[layer] = aggregate_to_spans(per_token, self.layout)
        rows = self.answer_rows()
        mask = np.zeros(self.seq_len, dtype=bool)
        if tokens.size:
            mask[tokens] = True
        else:
            mask = self._numbers
        mass = rows[..., mask].sum(axis=-1).mean(axis=-1)
        who = f"“{self.selection_text(selection)}”" if tokens.size else "the answer position"
        label = f"where {who} looks, layer by layer (mean over heads)"
        try:
            lens = [float(v) for v in self.logit_lens()]
        except AnalysisUnavailable as err:
            lens = [None] * self.num_layers
            label += f" (no logit lens: {err})"
        return {
            "spread": spread,
            "selection_mass": [None if np.isnan(v) else float(v) for v in mass],
            "logit_lens": lens,
            "label": label,
        }

    # ------------------------------------------------------------------ ablations
    def intervention_set(self, ablations: list[dict]) -> InterventionSet:
        """The explorer's ablation list (validated dicts) as an :class:`InterventionSet`."""
        items = []
        for a in ablations:
            if a["mode"] == "scale":
                items.append(
                    HeadIntervention(a["layer"], a["head"], mode="scale", value=float(a.get("value", 0.0)))
                )
            else:
                items.append(HeadIntervention(a["layer"], a["head"], mode=a["mode"]))
        return InterventionSet(items)

    @property
    def clean(self) -> Prediction | None:
        """The model's prediction for the statement (None when built from attention alone)."""
        return self._clean

    def prediction(self, ablations: list[dict]) -> dict:
        """``{"clean": {...}, "ablated": {...} | None, "flipped": bool}`` (Prediction fields).

        The ablated prediction comes from the exact fast path (re-run from the first
        ablated layer, answer position only) and equals a full forward with the same set.
        """
        from finwidget.widgets.protocol import canonical_json

        if ablations:
            self._require_model("ablating heads")
        if self.clean is None:
            return {}
        key = canonical_json(ablations)
        if key not in self._predictions:
            clean = self.clean.to_dict()
            if not ablations:
                result = {"clean": clean, "ablated": None, "flipped": False}
            else:
                ablated = self.cached.predict(self.intervention_set(ablations), reference=self.reference)[
                    0
                ].to_dict()
                result = {"clean": clean, "ablated": ablated, "flipped": ablated["label"] != clean["label"]}
            self._predictions[key] = result
        return self._predictions[key]

    def sweep(
        self, mode: str = "zero", value: float | None = None, progress=None, layers: list[int] | None = None
    ) -> np.ndarray:
        """``[L, H]`` float32 change in logit difference when each head alone is ablated.

        ``layers``: sweep only the heads of these layers (NaN elsewhere), e.g. the grid's
        layer range on a large model. ``progress``: called as ``progress(done, total)``.
        """
        self._require_model("the sweep")
        layers = list(range(self.num_layers)) if layers is None else sorted(set(layers))
        sets = []
        for layer in layers:
            for head in range(self.num_heads):
                entry = {"layer": layer, "head": head, "mode": mode}
                if mode == "scale":
                    entry["value"] = 0.0 if value is None else float(value)
                sets.append(self.intervention_set([entry]))
        total = len(sets)

        class _Counter:
            done = 0

            def update(self, n):
                self.done += n
                if progress is not None:
                    progress(self.done, total)

        diffs = self.cached.logit_diffs(sets, reference=self.reference, progress=_Counter())[:, 0].numpy()
        effect = np.full((self.num_layers, self.num_heads), np.nan, dtype=np.float32)
        effect[layers] = (diffs - float(self.cached.clean_logit_diff[0])).reshape(len(layers), self.num_heads)
        self.sweep_effect = effect
        self.sweep_mode = mode if mode != "scale" else f"scale ×{value}"
        return self.sweep_effect
