"""Measuring many statements: length-sorted, left-padded batches under capture."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from finwidget.population.datasets import read_dataset
from finwidget.population.metrics import measure_batch

STATEMENT_COLUMNS = ["statement", "label", "predicted", "correct", "logit_diff", "p_increase", "n_tokens"]


def batch_plan(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Statement indices in batches of ``batch_size``, sorted by length (stable), so each
    batch pads little. The plan depends only on the lengths and the batch size."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def prompt_lengths(tokenizer, texts: Sequence[str], task) -> list[int]:
    return [len(tokenizer(task.prompt(t))["input_ids"]) for t in texts]


def batch_rows(model, tokenizer, frame: pd.DataFrame, indices: Sequence[int], task, names=None) -> pd.DataFrame:
    """The metric table rows of the statements ``frame.iloc[indices]`` (one batch)."""
    tables, predictions = measure_batch(model, tokenizer, frame["text"].iloc[list(indices)].tolist(), task=task,
                                        names=names)
    out = []
    extra = [c for c in frame.columns if c not in ("text", "label")]
    for index, metrics, prediction in zip(indices, tables, predictions):
        row = frame.iloc[index]
        label = row["label"] if "label" in frame.columns else None
        info = {"statement": int(index), "label": label, "predicted": prediction.label,
                "correct": (prediction.label == label) if label is not None else None,
                "logit_diff": prediction.logit_diff, "p_increase": prediction.p_increase,
                "n_tokens": prediction.n_tokens, **{c: row[c] for c in extra}}
        out.append(metrics.assign(**info))
    table = pd.concat(out, ignore_index=True)
    ordered = STATEMENT_COLUMNS + extra
    return table[[c for c in ordered if c in table] + [c for c in table.columns if c not in ordered]]


def iterate_batches(model, tokenizer, frame: pd.DataFrame, batch_size: int, task, names=None,
                    plan: list[list[int]] | None = None, skip: set[int] = frozenset(), progress: bool = True,
                    ) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(batch index, metric rows)`` for each planned batch not in ``skip``."""
    from tqdm.auto import tqdm

    if plan is None:
        plan = batch_plan(prompt_lengths(tokenizer, frame["text"].tolist(), task), batch_size)
    todo = [i for i in range(len(plan)) if i not in skip]
    bar = tqdm(total=sum(len(plan[i]) for i in todo), unit="statement", disable=not progress,
               desc="measuring statements")
    try:
        for i in todo:
            rows = batch_rows(model, tokenizer, frame, plan[i], task, names)
            bar.update(len(plan[i]))
            yield i, rows
    finally:
        bar.close()


def measure_statements(model, tokenizer, samples, *, batch_size: int = 8, task=None, names=None,
                       text_column: str = "text", label_column: str | None = "label",
                       progress: bool = True) -> pd.DataFrame:
    """The metric table of ``samples`` (anything ``read_dataset`` takes), in memory.

    One row per (statement, layer, head): ``statement`` (row index in the dataset), the
    metrics of ``statement_head_metrics``, ``label``, ``predicted``, ``correct``,
    ``logit_diff``, ``p_increase``, ``n_tokens`` and the dataset's other columns. For
    datasets too large for memory, use ``Experiment`` (streams to Parquet).
    """
    from finwidget.task import EarningsTask

    frame = read_dataset(samples, text_column=text_column, label_column=label_column)
    task = task or EarningsTask(tokenizer)
    parts = [rows for _, rows in iterate_batches(model, tokenizer, frame, batch_size, task, names, progress=progress)]
    return pd.concat(parts, ignore_index=True).sort_values(["statement", "layer", "head"]).reset_index(drop=True)
