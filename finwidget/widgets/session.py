"""What the explorer shows about one statement: two kinds of session behind one interface.

:class:`ExplorerSession` answers from recorded attention and the statement's layout
alone (attention rows, the grid's attention measures, the layer flow); it is what
:class:`RecordedSession` is, built from attention recorded without the model.
:class:`ModelSession` also holds the model: one clean run is recorded with
:func:`~finwidget.capture.capture.capture_attention` (post-RoPE queries/keys only) while
:class:`~finwidget.interventions.cached_run.CachedRun` caches the residual stream, so it
can ablate heads, sweep them, and read the logit lens and direct contributions.

The session only selects, slices and encodes: grid measures come from
:mod:`finwidget.analysis.metrics`, the sweep from :mod:`finwidget.interventions.sweep`,
the logit lens and direct contributions from :mod:`finwidget.analysis`. Attention is
recomputed per head / per row when a view asks for it; the full ``L x H x T x T``
tensor is never built. Methods return float32 numpy arrays in the shapes their
docstrings state (L layers, H query heads, T tokens, S spans).
"""

from __future__ import annotations

import json
from functools import cached_property

import numpy as np
import torch

from finwidget.analysis.metrics import HeadMeasure, head_measure, selection_tokens
from finwidget.errors import InputError
from finwidget.statement.layout import StatementLayout
from finwidget.task import Prediction
from finwidget.widgets.reference import ReferenceSet, resolve_reference


class AnalysisUnavailable(InputError):
    """The analysis layer cannot provide a readout for this session (no model, or a model
    whose layout the readout does not support)."""


def _needs_model(what: str) -> InputError:
    return AnalysisUnavailable(
        f"{what} needs the model: this explorer only shows recorded attention; "
        "use AttentionExplorer(model, tokenizer, text) to change heads"
    )


def _span_range(selection) -> tuple[int, int] | None:
    """The protocol's ``[]`` / ``[start, end]`` -> ``None`` / ``(start, end)``."""
    return (int(selection[0]), int(selection[1])) if selection else None


class ExplorerSession:
    """One statement's recorded attention and layout, ready to answer the explorer.

    Args:
        source: the attention (``finwidget.analysis.as_attention_source`` interface), batch
            row 0 holding exactly the layout's tokens.
        layout: ``read_statement`` of those tokens.
        num_kv_heads, head_dim: the model's geometry as far as known (0 = unknown).
        prediction: the model's prediction for the statement, if known.
        model_name: what the toolbar calls the model.
    """

    #: whether this session can change heads (ablations, sweeps, logit lens)
    can_intervene = False

    def __init__(
        self,
        source,
        layout: StatementLayout,
        num_kv_heads: int,
        head_dim: int,
        prediction: Prediction | None = None,
        model_name: str = "recorded attention",
    ):
        self.capture = source
        self.layout = layout
        self.text = layout.text
        self.model_name = model_name
        self.num_layers = int(source.num_layers)
        self.num_heads = int(source.num_heads)
        self.num_kv_heads = int(num_kv_heads)
        self.head_dim = int(head_dim)
        self.seq_len = int(source.seq_len)
        self.layers = list(getattr(source, "layers", range(self.num_layers)))
        if layout.num_tokens != self.seq_len:
            raise InputError(
                f"the attention covers {self.seq_len} tokens but the statement layout has "
                f"{layout.num_tokens}; pass the layout of exactly the tokens the model ran"
            )
        self.answer_position = self.seq_len - 1
        self._clean = prediction

    # ------------------------------------------------------------------ the statement
    def token_texts(self) -> list[str]:
        """``[T]`` the text of each token as the statement view shows it."""
        return [self.layout.token_text(t) for t in range(self.layout.num_tokens)]

    def selection_tokens(self, selection: list[int]) -> np.ndarray:
        """Span range ``[start, end)`` -> int64 token positions of those spans; ``[]`` -> empty."""
        return selection_tokens(self.layout, _span_range(selection))

    def selection_text(self, selection: list[int]) -> str:
        if not selection:
            return ""
        spans = self.layout.spans[selection[0] : selection[1]]
        return " ".join(self.layout.text[spans[0].char_start : spans[-1].char_end].split())

    def _check_layer_recorded(self, layer: int) -> None:
        if layer not in self.layers:
            raise InputError(f"layer {layer} was not recorded; recorded layers: {self.layers}")

    # ------------------------------------------------------------------ attention
    def head_matrix(self, layer: int, head: int) -> np.ndarray:
        """``[T, T]`` float32 attention of one head (rows = queries, zero above the diagonal)."""
        self._check_layer_recorded(layer)
        return self.capture.attention(layer, head=head).numpy()

    def _heads_for(self, scope: str, layer: int | None = None, head: int | None = None,
                   layer_range: list[int] | None = None) -> dict[int, list[int]]:
        if scope == "focus":
            if layer is None or head is None:
                raise InputError("the focus scope needs a layer and a head")
            return {layer: [head]}
        if scope == "layer":
            if layer is None:
                raise InputError("the layer scope needs a layer")
            return {layer: list(range(self.num_heads))}
        if layer_range is None:
            raise InputError(f"the {scope} scope needs a layer range [first, last]")
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
            assert layer_range is not None, "_heads_for refused a range scope without a layer range"
            label = f"mean over the heads of layers {layer_range[0]}–{layer_range[1]}"
        return values, ("sum" if direction == "from" else "mean"), label

    # ------------------------------------------------------------------ grid measures
    def grid(self, measure: str, selection: list[int], direction: str = "to") -> tuple[np.ndarray, str]:
        """``([L, H] float32, legend)`` of one measure of :mod:`finwidget.analysis.metrics`
        (``direction`` "from" | "to" read by measures with ``follows_direction``)."""
        m = head_measure(measure)
        if m.needs == "attention":
            values = m.values(self.capture, self.layout, _span_range(selection), direction)
            return values, m.legend_for(self.selection_text(selection), direction)
        return self.head_readout(m)

    def head_readout(self, measure: HeadMeasure) -> tuple[np.ndarray, str]:
        """``([L, H] float32, legend)`` of a measure that needs the model."""
        raise _needs_model(measure.label)

    def logit_lens(self) -> np.ndarray:
        """``[L]`` float32 logit difference read out after each layer (final norm + unembedding)."""
        raise _needs_model("the logit lens")

    # ------------------------------------------------------------------ flow
    def flow(self, selection: list[int], direction: str = "from") -> dict:
        """The layer flow of the selection: where its attention goes (direction "from") or
        where the attention it receives comes from (direction "to"), in every layer.

        Returns ``{"spread": [L, S] float32, "selection_mass": [L] float | None,
        "logit_lens": L floats (None where unavailable), "label": str}``: per layer,
        "from": the selection's attention rows (the answer position's without a selection)
        summed per span, "to": the attention every token pays to the selection, averaged
        over each span's tokens (as the statement view's "to"), both averaged over the
        layer's heads; the grid's ``attention_to_selection`` in the same direction averaged
        over the layer's heads; the logit-lens logit difference after the layer.

        Only query rows of the selection are computed (``[H, |selection|, T]`` per layer),
        never a full ``T x T`` matrix, so this stays fast on long statements.
        """
        from finwidget.statement import aggregate_to_spans

        tokens = self.selection_tokens(selection)
        queries = tokens if tokens.size else np.asarray([self.answer_position])
        spread = np.zeros((self.num_layers, self.layout.num_spans), dtype=np.float32)
        heads = list(range(self.num_heads))
        if direction == "to":
            tokens_per_span = aggregate_to_spans(np.ones(self.seq_len, dtype=np.float32), self.layout)
        for layer in self.layers:
            if direction == "from":
                per_token = self._from_rows(layer, heads, queries).mean(axis=0)
                spread[layer] = aggregate_to_spans(per_token, self.layout)
            else:
                per_token = self._to_columns(layer, heads, queries).mean(axis=0)
                spread[layer] = aggregate_to_spans(per_token, self.layout) / np.maximum(tokens_per_span, 1)
        mass, _ = self.grid("attention_to_selection", selection, direction)
        who = f"“{self.selection_text(selection)}”" if tokens.size else "the answer position"
        if direction == "from":
            label = f"where {who} looks, layer by layer (mean over heads)"
        else:
            label = f"which spans look at {who}, layer by layer (mean over heads)"
        try:
            lens = [float(v) for v in self.logit_lens()]
        except AnalysisUnavailable as err:
            lens = [None] * self.num_layers
            label += f" (no logit lens: {err})"
        return {
            "spread": spread,
            "selection_mass": [None if np.isnan(v) else float(v) for v in mass.mean(axis=-1)],
            "logit_lens": lens,
            "label": label,
        }

    # ------------------------------------------------------------------ ablations
    @property
    def clean(self) -> Prediction | None:
        """The model's prediction for the statement (None when not known)."""
        return self._clean

    def prediction(self, ablations: list[dict], should_stop=None) -> dict:
        """``{"clean": {...}, "ablated": {...} | None, "flipped": bool}`` (Prediction fields);
        ``{}`` when the prediction is not known."""
        if ablations:
            raise _needs_model("ablating heads")
        if self.clean is None:
            return {}
        return {"clean": self.clean.to_dict(), "ablated": None, "flipped": False}

    def estimate(self, ablations: list[dict]) -> dict:
        """A first-order estimate of ``prediction(ablations)`` (see :class:`ModelSession`)."""
        raise _needs_model("estimating ablations")

    def intervention_set(self, ablations: list[dict]):
        """The explorer's ablation list (validated dicts) as an :class:`InterventionSet`."""
        from finwidget.interventions.spec import HeadIntervention, InterventionSet

        return InterventionSet(
            [HeadIntervention(a["layer"], a["head"], mode=a["mode"], value=a.get("value")) for a in ablations]
        )

    def sweep(self, mode: str = "zero", value: float | None = None, progress=None, layers=None,
              should_stop=None):
        raise _needs_model("the sweep")

    def sweep_statements(self, texts, mode: str = "zero", value: float | None = None, layers=None,
                         progress=None, should_stop=None):
        raise _needs_model("the sweep")

    # ------------------------------------------------------------------ runs
    def ablated_view(self, ablations: list[dict]) -> ExplorerSession:
        """This session as seen in the run with ``ablations`` applied (itself without any)."""
        if ablations:
            raise _needs_model("attention under ablations")
        return self

    def run_label(self, run: str, ablations: list[dict]) -> str:
        """What the UI writes above the attention views for ``run`` ("clean" | "ablated" | "difference")."""
        if run == "clean":
            return "clean run"
        if not ablations:
            return f"{run} run = clean run: no heads are ablated"
        what = ", ".join(iv.describe() for iv in self.intervention_set(ablations))
        if run == "ablated":
            return f"ablated run ({what})"
        return f"difference: ablated ({what}) minus clean"


    # ------------------------------------------------------------------ circuit
    def circuit(self, method: str = "attribution") -> dict:
        """The statement's circuit as ``CircuitGraph.to_dict()``; a recorded session has no
        model to patch, so it says why it cannot."""
        raise AnalysisUnavailable(
            "the circuit view needs the model: finding which heads feed which patches the "
            "model's runs, and this explorer only shows recorded attention; use "
            "AttentionExplorer(model, tokenizer, text, views=[..., 'circuit'])"
        )


class RecordedSession(ExplorerSession):
    """A session that only *shows* attention already recorded (no model: no ablations,
    no logit lens, no direct contributions).

    Args:
        attention: anything ``finwidget.analysis.as_attention_source`` reads (a capture,
            ``hook.attention_weights``, ``{'layer_i': [B, H, T, T]}``, an
            ``output_attentions`` tuple); batch row 0, unpadded, is shown.
        layout: the ``read_statement`` layout of the same tokens.
        prediction: the model's prediction for the statement, if known.
    """

    def __init__(
        self, attention, layout, prediction: Prediction | None = None, model_name: str = "recorded attention"
    ):
        from finwidget.analysis import as_attention_source

        source = as_attention_source(attention)
        super().__init__(
            source,
            layout,
            num_kv_heads=int(getattr(source, "num_kv_heads", None) or source.num_heads),
            head_dim=int(getattr(source, "head_dim", 0) or 0),
            prediction=prediction,
            model_name=model_name,
        )


class _Progress:
    """``update(n)`` for the cached run -> ``progress(done, total)`` for the caller; raises
    :class:`~finwidget.interventions.statement_sweep.SweepCancelled` once ``should_stop()``."""

    def __init__(self, callback, total: int, should_stop=None):
        self.callback, self.total, self.done = callback, total, 0
        self.should_stop = should_stop

    def update(self, n: int) -> None:
        from finwidget.interventions.statement_sweep import SweepCancelled

        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self.should_stop is not None and self.should_stop():
            raise SweepCancelled(self.done, self.total)


class ModelSession(ExplorerSession):
    """One statement run through the model: everything a recorded session shows, plus
    ablations, sweeps, the logit lens and direct contributions.

    Args:
        model: a Hugging Face causal LM (Qwen2-style layout for ablations).
        tokenizer: its fast tokenizer.
        text: the statement (the task adds the question and answer prefix).
        task: the :class:`~finwidget.task.EarningsTask` (default: ``EarningsTask(tokenizer)``).
        reference: what "mean" ablation averages each head's output over: statements, an
            encoded batch, recorded ``HeadOutputs`` or a :class:`ReferenceSet` (default:
            the demo generator's statements for the demo model; none otherwise, and then
            "mean" is refused with the reason).
        truncate: drop tokens from the statement's start when the prompt is longer than
            the model's context (else a too-long statement raises ``InputError``).
        store_dtype: dtype to keep the recorded queries/keys in (default: the model's).
        sweeps: where sweeps over several statements are kept (shared by the sessions of
            one explorer; default: this session's own).
        number_locale: how the statement groups digits, for the statement reader: ``"en"``
            (1,234.56, the default), ``"de"`` (1.234,56) or ``"in"`` (12,34,567.89).
    """

    can_intervene = True

    #: how many ablated captures a session keeps (the newest ones)
    ABLATED_CAPTURES_KEPT = 4

    def __init__(self, model, tokenizer, text: str, task=None, reference=None, truncate: bool = False,
                 store_dtype: torch.dtype | None = None, sweeps: SweepResults | None = None,
                 number_locale: str = "en"):
        from finwidget.capture.capture import capture_attention
        from finwidget.interventions.cached_run import CachedRun
        from finwidget.statement import read_statement
        from finwidget.statement.numbers import check_locale
        from finwidget.task import EarningsTask, context_length, model_device

        self.number_locale = check_locale(number_locale)  # before the model runs: a bad locale costs nothing
        self.model = model
        self.tokenizer = tokenizer
        self.task = task if task is not None else EarningsTask(tokenizer)
        self.batch = self.task.encode(
            text, max_length=context_length(model), truncate=truncate, device=model_device(model)
        )
        with capture_attention(model, store_dtype=store_dtype) as capture:
            self.cached = CachedRun(model, self.task, self.batch)
        input_ids = self.batch["input_ids"][0].tolist()
        layout = read_statement(text, tokenizer, input_ids=input_ids, task=self.task, number_locale=number_locale)
        if layout.num_tokens != capture.seq_len:
            raise InputError(
                f"the statement reader found {layout.num_tokens} tokens but the model ran "
                f"{capture.seq_len}; the tokenizer and the task disagree"
            )
        super().__init__(
            capture,
            layout,
            num_kv_heads=capture.num_kv_heads,
            head_dim=capture.head_dim,
            prediction=self.cached.clean[0],
            model_name=_model_name(model),
        )
        self.text = text
        self.store_dtype = store_dtype
        if not isinstance(reference, ReferenceSet):
            reference = resolve_reference(model, self.task, reference)
        self.reference_set = reference
        self.sweeps = sweeps if sweeps is not None else SweepResults()
        self._ablated: dict[str, ExplorerSession] = {}
        self._predictions: dict[str, dict] = {}
        self._circuits: dict[str, dict] = {}  # method -> CircuitGraph.to_dict()
        self.sweep_table = None  # DataFrame of the last sweep (interventions.sweep columns)
        self.sweep_label: str | None = None

    def token_texts(self) -> list[str]:
        texts = super().token_texts()
        return [text or self.tokenizer.decode([self.layout.input_ids[t]]) for t, text in enumerate(texts)]

    # ------------------------------------------------------------------ readouts
    @cached_property
    def decision(self):
        """The analysis layer's :class:`~finwidget.analysis.DecisionPathway` of the statement
        (one extra forward pass with temporary hooks, made when first asked for)."""
        from finwidget.analysis import decision_pathway

        try:
            return decision_pathway(self.model, self.task, self.batch)
        except InputError as err:
            raise AnalysisUnavailable(str(err)) from err

    def direct_logit_diff(self) -> np.ndarray:
        """``[L, H]`` float32 direct contribution of each head to the answer's logit difference."""
        heads = self.decision.heads
        heads = heads[heads["statement"] == 0]
        return _head_table(heads, "contribution", self.num_layers, self.num_heads, fill=0.0)

    @cached_property
    def _logit_lens(self) -> np.ndarray:
        from finwidget.analysis import logit_lens_from_residuals

        try:
            return logit_lens_from_residuals(
                self.model, self.task, self.cached.residuals, float(self.cached.clean_logit_diff[0])
            )
        except InputError as err:
            raise AnalysisUnavailable(str(err)) from err

    def logit_lens(self) -> np.ndarray:
        """``[L]`` float32, read from the cached clean run (no second forward pass); the
        same readout as :func:`finwidget.analysis.logit_lens` (tests compare them)."""
        return self._logit_lens

    def head_readout(self, measure: HeadMeasure) -> tuple[np.ndarray, str]:
        if measure.needs == "model":
            return self.direct_logit_diff(), measure.legend_for()
        if measure.name in ("mean_abs_change", "flip_rate"):
            if self.sweeps.summary is None:
                raise InputError("no sweep over the statements yet: press 'Sweep all statements' "
                                 "(or call explorer.sweep(statements='all')) first")
            values = _head_table(self.sweeps.summary, measure.name, self.num_layers, self.num_heads, fill=np.nan)
            return values, measure.legend.format(what=self.sweeps.label)
        if self.sweep_table is None:
            raise InputError("no ablation effects yet: press Sweep (or call explorer.sweep()) first")
        effect = _head_table(self.sweep_table, "change", self.num_layers, self.num_heads, fill=np.nan)
        return effect, measure.legend.format(what=self.sweep_label)

    # ------------------------------------------------------------------ ablations
    @property
    def clean(self) -> Prediction:
        """The model's prediction for the statement (always known: the session ran the model)."""
        return self.cached.clean[0]

    def prediction(self, ablations: list[dict], should_stop=None) -> dict:
        """``{"clean": {...}, "ablated": {...} | None, "flipped": bool}`` (Prediction fields).

        The ablated prediction comes from the exact fast path (re-run from the first
        ablated layer, answer position only) and equals a full forward with the same set.
        ``should_stop``: polled between layers; True stops the re-run with
        :class:`~finwidget.interventions.cancel.RunCancelled` (nothing is kept).
        """
        key = json.dumps(ablations, sort_keys=True)
        if key not in self._predictions:
            clean = self.clean.to_dict()
            if not ablations:
                result = {"clean": clean, "ablated": None, "flipped": False}
            else:
                interventions = self.intervention_set(ablations)
                ablated = self.cached.predict(interventions, reference=self._reference_for(interventions),
                                              should_stop=should_stop)[0]
                ablated = ablated.to_dict()
                result = {"clean": clean, "ablated": ablated, "flipped": ablated["label"] != clean["label"]}
            self._predictions[key] = result
        return self._predictions[key]

    # ------------------------------------------------------------------ click estimates
    @cached_property
    def click_estimates(self):
        """The statement's :class:`~finwidget.widgets.click_estimates.ClickEstimates`."""
        from finwidget.widgets.click_estimates import ClickEstimates

        return ClickEstimates(self)

    @property
    def estimates_ready(self) -> bool:
        return self.click_estimates.ready

    def prepare_estimates(self, should_stop=None) -> None:
        """Compute the gradients click estimates read (one forward and one backward pass,
        layer by layer; needs the model). A stop (``should_stop()`` true between layers,
        ``RunCancelled``) keeps the layers done; the next call resumes."""
        self.click_estimates.prepare(should_stop)

    def estimate(self, ablations: list[dict]) -> dict:
        """What the prediction view shows at once for a click: ``prediction(ablations)``'s
        fields plus ``"estimate"``: None when the exact answer is already known (then it
        is that answer), else ``{"method", "base", "base_logit_diff", "heads_estimated"}``
        and ``"ablated"`` holds the first-order estimate (see
        :mod:`~finwidget.widgets.click_estimates`). Needs no model: arithmetic on kept
        gradients. Raises ``EstimateUnavailable`` before :meth:`prepare_estimates` ran."""
        key = json.dumps(ablations, sort_keys=True)
        known = dict(self._predictions)  # a worker thread may add exact answers meanwhile
        if not ablations or key in known:
            return {**(known.get(key) or self.prediction([])), "estimate": None}
        estimate = self.click_estimates.estimate(ablations, known)
        clean = self.clean.to_dict()
        ablated = self.cached._predictions(torch.tensor([estimate.pop("logit_diff")], dtype=torch.float64))[0].to_dict()
        return {
            "clean": clean,
            "ablated": ablated,
            "flipped": ablated["label"] != clean["label"],
            "estimate": {"method": "first-order (attribution patching)", **estimate},
        }

    def sweep(self, mode: str = "zero", value: float | None = None, progress=None, layers=None,
              should_stop=None):
        """Ablate each head alone with ``mode``: the :func:`~finwidget.interventions.sweep.sweep_run`
        table (``layer, head, mode, logit_diff, clean_logit_diff, change, flipped``).

        ``layers``: sweep only the heads of these layers (all by default). ``value``: for a
        mode that takes one (default: the mode's default). ``progress``: called as
        ``progress(done, total)``. The grid's ``ablation_effect`` shows the table's ``change``.
        """
        from finwidget.interventions.modes import mode_catalogue
        from finwidget.interventions.spec import HeadIntervention
        from finwidget.interventions.sweep import SWEEP_COLUMNS, sweep_run

        layers = list(range(self.num_layers)) if layers is None else sorted(set(layers))
        info = next((m for m in mode_catalogue() if m["name"] == mode), None)
        if info is not None and info["takes_value"] and value is None:
            value = info["default_value"]
        heads = [(layer, head) for layer in layers for head in range(self.num_heads)]
        label = HeadIntervention(0, 0, mode, value=value).describe().split(" ", 1)[1]
        reference = self.reference_set.require() if mode == "mean" else None
        table = sweep_run(
            self.cached, heads, mode, value, reference=reference, progress=_Progress(progress, len(heads), should_stop)
        )
        self.sweep_table = table[SWEEP_COLUMNS].reset_index(drop=True)
        self.sweep_label = label
        return self.sweep_table


    # ------------------------------------------------------------------ runs
    @property
    def reference(self):
        """The recorded head outputs "mean" averages over (``InputError`` when there are none)."""
        return self.reference_set.require()

    def _reference_for(self, interventions):
        return self.reference_set.require() if interventions.needs_reference else None

    def ablated_view(self, ablations: list[dict]) -> ExplorerSession:
        """This session as seen in a run with ``ablations`` applied: the attention of a
        capture made while the intervention set is applied (a full forward pass; layer
        ``l``'s ablation changes the attention of layers after ``l``), and the logit lens
        of that run. Itself when ``ablations`` is empty. The newest few are kept."""
        if not ablations:
            return self
        key = json.dumps(ablations, sort_keys=True)
        view = self._ablated.pop(key, None)
        if view is None:
            view = self._ablated_capture(ablations)
        self._ablated[key] = view
        while len(self._ablated) > self.ABLATED_CAPTURES_KEPT:
            self._ablated.pop(next(iter(self._ablated)))
        return view

    def circuit(self, method: str = "attribution") -> dict:
        """The statement's circuit (``finwidget.circuits.find_circuit`` with ``method``) as
        ``CircuitGraph.to_dict()`` (the JSON schema of ``to_json()``), found once per method.
        Each head is patched from (and faithfulness measured by mean ablation over) the
        explorer's reference set; without one, ``AnalysisUnavailable`` says how to give it."""
        if method not in self._circuits:
            from finwidget.circuits import find_circuit

            if not self.reference_set.available:
                # find_circuit patches each head from a reference run: without the explorer's
                # reference set there is none (the reason names how to give one).
                raise AnalysisUnavailable(
                    f"the circuit needs a reference set to patch each head from: {self.reference_set.disabled_reason}"
                )
            graph = find_circuit(self.model, self.task, self.text, reference=self.reference_set.outputs,
                                 method=method)
            self._circuits[method] = graph.to_dict()
        return self._circuits[method]

    def _ablated_capture(self, ablations: list[dict]) -> ExplorerSession:
        import copy

        from finwidget.analysis import logit_lens_from_residuals
        from finwidget.capture.capture import capture_attention
        from finwidget.interventions.anatomy import decoder_layers
        from finwidget.task import eval_mode

        interventions = self.intervention_set(ablations)
        reference = self._reference_for(interventions)
        residuals: list = [None] * self.num_layers

        def keeper(index):
            def hook(module, args, kwargs):
                residuals[index] = (args[0] if args else kwargs["hidden_states"]).detach()
            return hook

        handles = []
        try:
            for index, layer in enumerate(decoder_layers(self.model)):
                handles.append(layer.register_forward_pre_hook(keeper(index), with_kwargs=True))
            with capture_attention(self.model, store_dtype=self.store_dtype) as capture, \
                    interventions.applied(self.model, reference=reference), \
                    torch.inference_mode(), eval_mode(self.model):
                out = self.model(**self.batch, use_cache=False, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
        final = float(self.task.logit_diff(out.logits[:, -1, :])[0])
        view = copy.copy(self)
        view.capture = capture
        view._ablated = {}
        view.__dict__["_logit_lens"] = logit_lens_from_residuals(self.model, self.task, residuals, final)
        view.__dict__.pop("decision", None)
        return view

    def sweep_statements(self, texts, mode: str = "zero", value: float | None = None, layers=None,
                         progress=None, should_stop=None):
        """Ablate each head alone on each of ``texts``: the per-head summary (mean |change|,
        flip rate) is kept in ``self.sweeps`` (the grid's ``mean_abs_change`` and
        ``flip_rate``) and returned with the full table: ``(summary, table)``."""
        from finwidget.interventions.spec import HeadIntervention
        from finwidget.interventions.statement_sweep import sweep_statements
        from finwidget.interventions.sweep import summarize_sweep

        layers = list(range(self.num_layers)) if layers is None else sorted(set(layers))
        value = _mode_value_or_default(mode, value)
        heads = [(layer, head) for layer in layers for head in range(self.num_heads)]
        reference = self.reference_set.require() if mode == "mean" else None
        table = sweep_statements(self.model, self.task, texts, heads, mode, value, reference=reference,
                                 progress=progress, should_stop=should_stop)
        summary = summarize_sweep(table)
        label = HeadIntervention(0, 0, mode, value=value).describe().split(" ", 1)[1]
        self.sweeps.keep(summary, table, f"{label}, {len(list(texts))} statements")
        return summary, table


class SweepResults:
    """The newest sweep over several statements of one explorer (shared by its sessions).

    summary: :func:`~finwidget.interventions.sweep.summarize_sweep` of ``table`` (one row
    per head: mean_change, mean_abs_change, flip_rate, n_statements); table: the sweep's
    rows (one per head and statement); label: its mode and number of statements.
    """

    def __init__(self):
        self.summary = None
        self.table = None
        self.label = ""

    def keep(self, summary, table, label: str) -> None:
        self.summary, self.table, self.label = summary, table, label


def _mode_value_or_default(mode: str, value):
    from finwidget.interventions.modes import mode_catalogue

    info = next((m for m in mode_catalogue() if m["name"] == mode), None)
    if info is not None and info["takes_value"] and value is None:
        return info["default_value"]
    return value


def _head_table(frame, column: str, num_layers: int, num_heads: int, fill: float) -> np.ndarray:
    """``[L, H]`` float32 of one column of a (layer, head) table; ``fill`` where a head has no row."""
    out = np.full((num_layers, num_heads), fill, dtype=np.float32)
    out[frame["layer"].to_numpy(), frame["head"].to_numpy()] = frame[column].to_numpy(dtype=np.float32)
    return out


def _model_name(model) -> str:
    """What the toolbar calls the model: its hub id or folder, the demo model by name."""
    from pathlib import Path

    from finwidget.demo import MODEL_DIR

    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    if name and Path(name).expanduser().resolve() == Path(MODEL_DIR).resolve():
        return "finwidget demo model"
    return name
