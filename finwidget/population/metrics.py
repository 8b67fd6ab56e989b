"""Per-head metrics of one statement, measured by the analysis layer, and the batched run
that measures them over many statements.

``statement_head_metrics`` is the one place that turns captured attention of one
statement into a row of numbers per (layer, head); it calls the analysis layer
(``head_specialization``, ``span_attention_from``) and computes no attention metric of its
own, only sums of what those return over groups of spans. It is the single switch point
to a registry of per-head metrics by name in the analysis layer, when there is one: the
rest of the package only sees its ``[layer, head, <metric>...]`` table.

Metric columns (all per layer x head, one statement):

- from ``head_specialization`` (mean over query rows): ``self_attention``,
  ``sink_attention``, ``previous_token``, ``entropy``, ``financial_attention``,
  ``number_attention``, ``year_attention``, ``financial_lift``, ``number_lift``,
  ``year_lift``;
- from the answer position (``span_attention_from(..., position=-1)``, attention mass
  summed over the spans named): ``answer_financial`` (financial terms and line item
  names), ``answer_numbers`` (numbers), ``answer_recent_year`` / ``answer_prior_year``
  (numbers and year labels of the latest / the earliest year in the statement),
  ``answer_large_numbers`` / ``answer_small_numbers`` (numbers whose absolute value is
  above / at most the statement's median absolute value), and
  ``answer_financial_per_token`` / ``answer_other_words_per_token`` (mass divided by the
  number of tokens: financial terms vs every other word, so the two compare per token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from finwidget.analysis.prediction import span_attention_from
from finwidget.analysis.specialization import head_specialization
from finwidget.statement.layout import StatementLayout

SPECIALIZATION_METRICS = (
    "self_attention", "sink_attention", "previous_token", "entropy",
    "financial_attention", "number_attention", "year_attention",
    "financial_lift", "number_lift", "year_lift",
)
ANSWER_METRICS = (
    "answer_financial", "answer_numbers", "answer_recent_year", "answer_prior_year",
    "answer_large_numbers", "answer_small_numbers",
    "answer_financial_per_token", "answer_other_words_per_token",
)
METRICS = SPECIALIZATION_METRICS + ANSWER_METRICS
#: answer-position masses (the per-token pair is for the within-statement contrast)
PREDICTION_METRICS = tuple(m for m in ANSWER_METRICS if not m.endswith("_per_token"))


def _span_groups(layout: StatementLayout) -> dict[str, tuple[np.ndarray, int]]:
    """``{metric: (span indices [k], token count)}`` for the answer-position metrics."""
    spans = layout.spans
    financial = [s.index for s in layout.financial_spans()]
    sizes = {s.index: abs(s.value) for s in spans if s.kind == "number" and s.value is not None
             and np.isfinite(s.value)}  # {span index: |value|} of the numbers, in span order
    years = sorted({int(s.year) for s in spans if s.year is not None and np.isfinite(s.year)})
    recent = [s.index for s in spans if years and s.year is not None and s.year == years[-1]]
    prior = [s.index for s in spans if len(years) > 1 and s.year is not None and s.year == years[0]]
    median = float(np.median(list(sizes.values()))) if sizes else math.nan
    large = [i for i, size in sizes.items() if size > median]
    small = [i for i, size in sizes.items() if size <= median]
    financial_set = set(financial)
    other_words = [s.index for s in spans if s.kind in ("word", "line_item_name") and s.index not in financial_set]

    def tokens(indices):
        return sum(spans[i].token_end - spans[i].token_start for i in indices)

    groups = {
        "answer_financial": financial, "answer_numbers": list(sizes),
        "answer_recent_year": recent, "answer_prior_year": prior,
        "answer_large_numbers": large, "answer_small_numbers": small,
        "answer_financial_per_token": financial, "answer_other_words_per_token": other_words,
    }
    return {name: (np.asarray(idx, dtype=np.int64), tokens(idx)) for name, idx in groups.items()}


def statement_head_metrics(attention, layout: StatementLayout, batch: int = 0,
                           names: Sequence[str] | None = None) -> pd.DataFrame:
    """Every head's metrics for one statement.

    Args:
        attention: an ``AttentionCapture`` (or anything ``as_attention_source`` takes)
            holding the statement in batch row ``batch``.
        layout: ``read_statement`` of the prompt that row ran.
        names: metric names to keep (default: all of ``METRICS``).

    Returns:
        DataFrame ``[layer, head, <metric>...]``, one row per captured (layer, head).
    """
    names = list(METRICS if names is None else names)
    specialization = head_specialization(attention, layout, batch=batch)
    # plain arrays, one DataFrame at the end (pandas column edits cost more than the numbers here)
    columns = {c: specialization[c].to_numpy() for c in ("layer", "head", *SPECIALIZATION_METRICS)}
    if any(n in ANSWER_METRICS for n in names):
        _, answer = span_attention_from(attention, layout, position=-1, batch=batch)  # [L, H, S]
        flat = answer.reshape(-1, answer.shape[-1]).double().numpy()  # [L*H, S] in (layer, head) order
        for name, (indices, count) in _span_groups(layout).items():
            if name not in names:
                continue
            mass = flat[:, indices].sum(axis=1) if indices.size else np.full(flat.shape[0], math.nan)
            if name.endswith("_per_token"):
                mass = mass / count if count else np.full(flat.shape[0], math.nan)
            columns[name] = mass
    return pd.DataFrame({c: columns[c] for c in ("layer", "head", *names)})


def measure_batch(model, tokenizer, texts: Sequence[str], task=None, names=None, lexicon=None) -> tuple[
        list[pd.DataFrame], list]:
    """Run one left-padded batch under capture; per statement its metric table and prediction.

    Returns ``(tables, predictions)``: ``tables[i]`` is ``statement_head_metrics`` of
    ``texts[i]``; ``predictions[i]`` its ``Prediction``.
    """
    from finwidget.capture import capture_attention
    from finwidget.statement import read_statement
    from finwidget.task import EarningsTask, context_length, eval_mode, model_device

    task = task or EarningsTask(tokenizer)
    batch = task.encode(list(texts), max_length=context_length(model), device=model_device(model))
    with capture_attention(model) as cap, torch.inference_mode(), eval_mode(model):
        out = model(**batch, logits_to_keep=1)
    predictions = task.predictions(out.logits[:, -1, :], batch["attention_mask"])
    tables = []
    for row, text in enumerate(texts):
        layout = read_statement(text, tokenizer, task=task, lexicon=lexicon)
        tables.append(statement_head_metrics(cap, layout, batch=row, names=names))
    cap.release()
    return tables, predictions
