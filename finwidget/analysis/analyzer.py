"""The guide's ``FinancialAttentionAnalyzer`` and ``quick_attention_analysis``.

    analyzer = quick_attention_analysis(model, tokenizer, text, layer_idx=0)
    analyzer.identify_financial_tokens()              # financial terms and line items
    analyzer.compute_financial_attention_scores()     # financial clustering per (layer, head)
    analyzer.analyze_prediction_attention()           # per layer: what the answer position reads
    analyzer.attention_weights['layer_3'][0, 5]       # one head's [T, T] matrix, computed on access
    analyzer.plot_attention_heatmap(layer_idx=0, head_idx=0)

Everything reads the model's geometry from the capture (Qwen2-7B: 28 layers, 28 query
heads over 4 key/value heads), and speaks in spans ("Net income", "13,937"), not
sub-word tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from finwidget.analysis import figures
from finwidget.analysis.clustering import category_attention, financial_attention_matrix, financial_clustering
from finwidget.analysis.flow import attention_flow, attention_rollout, trace_attention_flow
from finwidget.analysis.prediction import (
    check_top_k,
    prediction_attention,
    resolve_position,
    span_attention_from,
)
from finwidget.analysis.source import (
    as_attention_source,
    check_layers,
    head_rows,
    rows_per_chunk,
    token_columns,
)
from finwidget.analysis.specialization import head_specialization
from finwidget.errors import InputError
from finwidget.model_parts import ModelGeometry, check_index, is_integer
from finwidget.statement import read_statement, read_tokens
from finwidget.statement.layout import StatementLayout
from finwidget.statement.numbers import check_locale
from finwidget.task import EarningsTask, context_length, eval_mode, model_device


class FinancialAttentionAnalyzer:
    """Captured attention read in the terms of a financial statement.

    Args:
        attention: an ``AttentionCapture``, an ``AttentionHook``, ``hook.attention_weights``,
            a dict ``{'layer_i': [batch, heads, query, key]}`` or an ``output_attentions`` tuple.
        tokenizer: the model's fast tokenizer (to read the tokens as spans).
        input_ids: the ids the model ran (``[T]`` or ``[B, T]``; row ``batch`` is used,
            padding dropped).
        text: the text the model read: the full prompt, or the statement (then the
            prompt is rebuilt with ``task``).
        layout: a ready ``read_statement`` result (instead of tokenizer/text/input_ids).
        task: the ``EarningsTask`` that built the prompt (default ``EarningsTask(tokenizer)``).
        batch: which sequence of the captured batch to analyze.
        lexicon: financial vocabulary for ``read_statement``.
        number_locale: how the statement groups digits, for ``read_statement``: ``"en"``
            (1,234.56, the default), ``"de"`` (1.234,56) or ``"in"`` (12,34,567.89).
        default_layer: the layer plots use when none is given.
        max_bytes: memory cap for chunked computations (see ``head_specialization``).
    """

    def __init__(self, attention, tokenizer=None, input_ids=None, text: str | None = None, *,
                 layout: StatementLayout | None = None, task: EarningsTask | None = None, batch: int = 0,
                 lexicon=None, default_layer: int = 0, max_bytes: int | None = None,
                 number_locale: str = "en"):
        check_locale(number_locale)
        self.source = as_attention_source(attention)
        self.batch = check_index(batch, None, "batch row", negative=False)
        self.max_bytes = max_bytes
        self.task = task
        self.tokenizer = tokenizer
        self.prediction = None  # set by quick_attention_analysis
        cols = token_columns(self.source, self.batch)
        if layout is None:
            layout = _read_layout(self.source, cols, tokenizer, input_ids, text, task, self.batch, lexicon,
                                  number_locale)
        self.layout = layout
        self.columns = token_columns(self.source, self.batch, layout)
        (self.default_layer,) = check_layers(self.source, [default_layer])
        self._specialization = None

    @classmethod
    def from_model(cls, model, tokenizer, text: str, layer_idx: int = 0, *, task: EarningsTask | None = None,
                   layers=None, store_dtype=None, lexicon=None, number_locale: str = "en"):
        """Run a statement through the model under capture and return its analyzer.

        The prompt is ``task.prompt(text)`` (default ``EarningsTask(tokenizer)``); the model runs
        once with its own attention implementation while queries/keys are recorded.
        ``layer_idx`` is the layer the analyzer's plots show by default. The model's
        prediction for the statement is kept in ``analyzer.prediction``. ``number_locale``:
        how the statement groups digits (``"en"``, ``"de"``, ``"in"``; see ``read_statement``).
        """
        from finwidget.capture import capture_attention

        check_locale(number_locale)
        task = task or EarningsTask(tokenizer)
        batch = task.encode(text, max_length=context_length(model), device=model_device(model))
        layer_idx = ModelGeometry.of(model).check_layer(layer_idx, negative=True)
        layers_to_capture = layers
        if layers is not None:
            layers_to_capture = sorted(set([layers] if is_integer(layers) else layers) | {layer_idx})
        with capture_attention(model, layers=layers_to_capture, store_dtype=store_dtype) as cap, \
                torch.inference_mode(), eval_mode(model):
            out = model(**batch, logits_to_keep=1)
        analyzer = cls(cap, tokenizer, input_ids=batch["input_ids"], text=text, task=task, lexicon=lexicon,
                       default_layer=layer_idx, number_locale=number_locale)
        analyzer.prediction = task.predictions(out.logits[:, -1, :], batch["attention_mask"])[0]
        return analyzer

    # ------------------------------------------------------------ geometry and tokens
    @property
    def num_layers(self) -> int:
        return self.source.num_layers

    @property
    def num_heads(self) -> int:
        return self.source.num_heads

    @property
    def layers(self) -> list[int]:
        return list(self.source.layers)

    @property
    def attention_weights(self):
        """``'layer_{i}'`` -> ``[batch, heads, query, key]`` tensor-like (computed on access for a capture)."""
        return self.source.attention_weights

    @property
    def spans(self):
        return self.layout.spans

    @property
    def tokens(self) -> list[str]:
        """The text of each token of the layout."""
        return [self.layout.token_text(i) for i in range(self.layout.num_tokens)]

    # ------------------------------------------------------------ the guide's methods
    def identify_financial_tokens(self) -> list:
        """The statement's financial terms and line item names (``Span`` objects, in text order)."""
        return self.layout.financial_spans()

    def compute_financial_attention_scores(self, layers=None):
        """Financial clustering per (layer, head): attention from financial terms to financial
        terms vs uniform attention (DataFrame, see ``financial_clustering``)."""
        return financial_clustering(self.source, self.layout, layers=layers, batch=self.batch,
                                    max_bytes=self.max_bytes)

    def financial_attention_matrix(self, layer_idx: int | None = None, head_idx: int | None = None):
        """Span x span attention among financial terms for one layer (DataFrame)."""
        layer = self.default_layer if layer_idx is None else layer_idx
        return financial_attention_matrix(self.source, self.layout, layer, head_idx, batch=self.batch)

    def head_specialization(self, layers=None):
        """Per (layer, head) measurements and head types (see ``head_specialization``)."""
        if layers is None and self._specialization is not None:
            return self._specialization
        table = head_specialization(self.source, self.layout, layers=layers, batch=self.batch,
                                    max_bytes=self.max_bytes)
        if layers is None:
            self._specialization = table
        return table

    def prediction_position(self, prediction_token: str | None = None) -> int:
        """The layout token index where the answer is predicted.

        If the sequence holds a generated ``prediction_token`` right after the answer
        prefix ("Answer:"), the prediction was made at the token before it; otherwise it is
        the last token (the prompt ends where the answer comes next).
        """
        if prediction_token is not None and not isinstance(prediction_token, str):
            raise InputError(f"prediction_token must be a str (the answer word) or None, got "
                             f"{type(prediction_token).__name__}")
        if prediction_token:
            wanted = prediction_token.strip().lower()
            prefixes = [p for p in (getattr(self.task, "answer_prefix", "Answer:"),
                                    getattr(self.task, "chat_answer_prefix", None)) if p]
            text = self.layout.text
            for t in range(self.layout.num_tokens - 1, 0, -1):
                start, end = self.layout.token_offsets[t]
                if text[start:end].strip().lower() == wanted and \
                        any(text[:start].rstrip().endswith(p) for p in prefixes):
                    return t - 1
        return self.layout.num_tokens - 1

    def analyze_prediction_attention(self, prediction_token: str = "increase", layers=None, top_k: int | None = 10,
                                     position: int | None = None) -> dict[str, dict]:
        """What the prediction position attends to, per layer.

        Returns ``{'layer_i': {...}}`` with, per layer:
        ``financial_attention``, ``numeric_attention``, ``temporal_attention``: each
        ``{'mean', 'std', 'min', 'max', 'per_head'}`` over heads of the attention mass from the
        prediction position to financial terms / numbers / years;
        ``top_attended_tokens``: ``[(span text, attention)]`` most attended spans (mean over heads);
        ``top_attended_spans``: the same with span index, kind, category, line item and year;
        ``query_position``, ``query_token``, ``prediction_token``.
        """
        top_k = check_top_k(top_k)
        position = self.prediction_position(prediction_token) if position is None else \
            resolve_position(position, self.layout.num_tokens)
        layers, values = span_attention_from(self.source, self.layout, position, layers, self.batch)  # [L, H, S]
        groups = {
            "financial_attention": [s.index for s in self.layout.financial_spans()],
            "numeric_attention": [s.index for s in self.layout.select(kinds=["number"])],
            "temporal_attention": [s.index for s in self.layout.select(kinds=["year"])],
        }
        results = {}
        for k, layer in enumerate(layers):
            per_head = values[k]  # [H, S]
            entry = {}
            for name, indices in groups.items():
                mass = per_head[:, indices].sum(-1) if indices else torch.zeros(per_head.shape[0])
                entry[name] = {"mean": float(mass.mean()), "std": float(mass.std(unbiased=False)),
                               "min": float(mass.min()), "max": float(mass.max()), "per_head": mass.tolist()}
            mean = per_head.mean(0)
            order = torch.argsort(mean, descending=True, stable=True)[:top_k].tolist()
            entry["top_attended_tokens"] = [(self.layout.spans[i].text, round(float(mean[i]), 6)) for i in order]
            entry["top_attended_spans"] = [
                {"span": i, "text": self.layout.spans[i].text, "attention": float(mean[i]),
                 "kind": self.layout.spans[i].kind, "category": self.layout.spans[i].category,
                 "line_item": self.layout.spans[i].line_item, "year": self.layout.spans[i].year}
                for i in order
            ]
            entry["query_position"] = position
            entry["query_token"] = self.layout.token_text(position)
            entry["prediction_token"] = prediction_token
            results[f"layer_{layer}"] = entry
        return results

    def prediction_attention(self, position: int = -1, layers=None, top_k: int | None = None):
        """Per (layer, head, span) attention from ``position`` (DataFrame, see ``prediction_attention``)."""
        return prediction_attention(self.source, self.layout, position, layers, self.batch, top_k)

    def trace_attention_flow(self, target_token_pos: int = -1, by_span: bool = False) -> dict[str, torch.Tensor]:
        """The guide's ``trace_attention_flow``: ``{'layer_i': head-averaged attention row}``
        over tokens (or spans with ``by_span=True``)."""
        return trace_attention_flow(self.source, target_token_pos, self.layout if by_span else None, self.batch)

    def attention_flow(self, position: int = -1, layers=None):
        """Head-averaged attention from ``position`` to each span, per layer (DataFrame)."""
        return attention_flow(self.source, position, self.layout, layers, self.batch)

    def attention_rollout(self, position: int = -1, residual_weight: float = 0.5):
        """Attention rollout of ``position`` over spans (DataFrame, see ``attention_rollout``)."""
        return attention_rollout(self.source, position, self.layout, residual_weight, self.batch, self.max_bytes)

    # ------------------------------------------------------------ matrices for plots
    def span_attention_matrix(self, layer_idx: int, head_idx: int, query_reduce: str = "mean") -> np.ndarray:
        """``[S, S]`` float32 span-level attention of one head (sum over key tokens,
        ``query_reduce`` over query tokens)."""
        (layer,) = check_layers(self.source, [layer_idx])
        head = _check_head(head_idx, self.num_heads)
        if query_reduce not in ("mean", "max"):
            raise InputError(f"query_reduce must be 'mean' or 'max', got {query_reduce!r}")
        n, num_spans = self.columns.count, self.layout.num_spans
        spans = torch.as_tensor(self.layout.token_to_span[:n])
        inside = spans >= 0
        key_to_span = torch.zeros(n, num_spans, dtype=torch.float32)  # [n, S] one-hot: token -> its span
        key_to_span[torch.nonzero(inside).flatten(), spans[inside]] = 1.0
        fill = 0.0 if query_reduce == "mean" else float("-inf")
        out = torch.full((num_spans, num_spans), fill, dtype=torch.float32)
        step = rows_per_chunk(1, n, self.max_bytes)  # one head: rows of n float32 each
        for start in range(0, n, step):
            stop = min(n, start + step)
            rows = head_rows(self.source, layer, head, self.batch, self.columns, start, stop).cpu()  # [c, n]
            by_span = rows @ key_to_span  # [c, S]: summed over each key span's tokens
            q_spans = spans[start:stop]
            keep = q_spans >= 0
            if query_reduce == "mean":
                out.index_add_(0, q_spans[keep], by_span[keep])
            else:
                index = q_spans[keep][:, None].expand(-1, num_spans)
                out.scatter_reduce_(0, index, by_span[keep], reduce="amax", include_self=True)
        if query_reduce == "mean":
            counts = torch.bincount(spans[inside], minlength=num_spans).clamp(min=1).float()
            out /= counts[:, None]
        else:
            out[torch.isinf(out)] = 0.0
        return out.numpy()

    # ------------------------------------------------------------ plots
    def explorer_view(self, view: str, layer: int, head: int):
        """An explorer widget of this analysis (``view``: ``"heatmap"`` or ``"flow"``).

        The analysis layer knows no widgets: the guide's analyzer
        (``finwidget.interpretability_tools.FinancialAttentionAnalyzer``, also ``finwidget``'s)
        returns them; this one asks for ``as_figure=True``.
        """
        raise InputError(
            "explorer widgets come from the guide's analyzer: use finwidget.interpretability_tools."
            "quick_attention_analysis / FinancialAttentionAnalyzer (or finwidget's), or pass as_figure=True"
        )

    def plot_attention_heatmap(self, layer_idx: int | None = None, head_idx: int = 0, max_spans: int = 80,
                               as_figure: bool = False):
        """One head's attention: the explorer's attention-matrix widget (canvas, zoom and pan,
        hover shows the query and key spans, line-item aggregation), from the guide's analyzer
        (see :meth:`explorer_view`).

        ``as_figure=True`` returns a bqplot heat map between spans instead: spans, not
        tokens (``1,234`` is one row and column); with more than ``max_spans`` spans,
        punctuation and line breaks are left out, then the spans receiving the most
        attention are kept (in text order).
        """
        layer = self.default_layer if layer_idx is None else layer_idx
        if not as_figure:
            return self.explorer_view("heatmap", layer, _check_head(head_idx, self.num_heads))
        matrix = self.span_attention_matrix(layer, head_idx)
        keep = _spans_to_show(self.layout, matrix, max_spans)
        labels = [self.layout.spans[i].text for i in keep]
        shown = matrix[np.ix_(keep, keep)]
        return figures.heatmap_figure(shown, labels, labels, f"Layer {layer}, head {head_idx}: attention between spans")

    def plot_financial_attention_flow(self, layer_idx: int | None = None, head_idx: int | None = None,
                                      as_figure: bool = False):
        """Where attention flows in the statement: the explorer's layer-flow widget, the
        statement coloured by the mean attention of ``layer_idx``'s heads (from the guide's
        analyzer, see :meth:`explorer_view`).

        ``as_figure=True`` returns a bqplot heat map of attention between span groups
        (financial categories, numbers, years, other) in that layer, averaged over heads
        unless ``head_idx`` is given.
        """
        layer = self.default_layer if layer_idx is None else layer_idx
        if not as_figure:
            return self.explorer_view("flow", layer, 0)
        table = category_attention(self.source, self.layout, layer, head_idx, self.batch, self.max_bytes)
        who = "mean over heads" if head_idx is None else f"head {head_idx}"
        return figures.heatmap_figure(table.to_numpy(), list(table.index), list(table.columns),
                                      f"Layer {layer} ({who}): attention between statement categories",
                                      x_label="attended group", y_label="attending group")

    def __repr__(self) -> str:
        return (f"FinancialAttentionAnalyzer({self.layout.num_tokens} tokens, {self.layout.num_spans} spans, "
                f"{len(self.layers)} layers x {self.num_heads} heads)")


def _check_head(head, num_heads: int) -> int:
    return check_index(head, num_heads, "head", f"this model has {num_heads} query heads per layer")


def _spans_to_show(layout: StatementLayout, matrix: np.ndarray, max_spans: int) -> list[int]:
    indices = list(range(layout.num_spans))
    if len(indices) <= max_spans:
        return indices
    indices = [i for i in indices if layout.spans[i].kind not in ("punct", "break")]
    if len(indices) <= max_spans:
        return indices
    received = matrix.sum(0)
    top = sorted(indices, key=lambda i: -received[i])[:max_spans]
    return sorted(top)


def _read_layout(source, cols, tokenizer, input_ids, text, task, batch, lexicon,
                 number_locale: str = "en") -> StatementLayout:
    if tokenizer is None:
        raise InputError(
            "FinancialAttentionAnalyzer needs to know the tokens: pass tokenizer= with text= or input_ids= "
            "(or a ready layout= from read_statement)"
        )
    ids = None
    if input_ids is not None:
        ids = torch.as_tensor(input_ids)
        if ids.dim() == 2:
            ids = ids[batch]
        # generate() returns one token more than the model ran (the last one is sampled, never fed back)
        if ids.numel() > source.seq_len:
            ids = ids[: source.seq_len]
        if ids.numel() == source.seq_len and source.attention_mask is not None:
            ids = ids[cols.columns.to(ids.device)]
        ids = ids.tolist()
    attempts = []
    if text is not None:
        attempts.append({"text": text, "input_ids": ids})
        attempts.append({"text": text, "input_ids": ids, "task": task or EarningsTask(tokenizer)})
    elif ids is None:
        raise InputError("pass text= (what the model read) or input_ids= with the tokenizer")
    errors = []
    for attempt in attempts:
        try:
            layout = read_statement(attempt.pop("text"), tokenizer, lexicon=lexicon, number_locale=number_locale,
                                    **attempt)
        except InputError as exc:
            errors.append(str(exc))
            continue
        if layout.num_tokens <= cols.count and (ids is not None or layout.num_tokens == cols.count):
            return layout
        errors.append(f"the text has {layout.num_tokens} tokens, the captured row has {cols.count}")
    if ids is not None:
        # ids that are not the tokenizer's own tokenization of their text (generated tokens): read them as they are
        layout = read_tokens(ids, tokenizer, statement=text, lexicon=lexicon, number_locale=number_locale)
        if text is None or text.strip() in layout.text:
            return layout
        errors.append("the text is not in the decoded input_ids")
    raise InputError("the text does not match the captured tokens: " + "; ".join(errors))


def quick_attention_analysis(model, tokenizer, text: str, layer_idx: int = 0, *, task: EarningsTask | None = None,
                             layers=None, store_dtype=None, lexicon=None,
                             number_locale: str = "en") -> FinancialAttentionAnalyzer:
    """Run a statement through the model under capture and return its analyzer
    (:meth:`FinancialAttentionAnalyzer.from_model`)."""
    return FinancialAttentionAnalyzer.from_model(model, tokenizer, text, layer_idx, task=task, layers=layers,
                                                 store_dtype=store_dtype, lexicon=lexicon, number_locale=number_locale)
