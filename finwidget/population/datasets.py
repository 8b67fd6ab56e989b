"""Reading a set of statements: lists, DataFrames, CSV, JSONL or Parquet files.

Every reader returns a DataFrame with a ``text`` column, a ``label`` column when the
data has one, and every other column the data brings (kept as statement columns for
grouping).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from finwidget.errors import InputError

READERS = {".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _sample_text(sample, text_column: str):
    if isinstance(sample, str):
        return {"text": sample}
    if isinstance(sample, pd.Series):
        if text_column not in sample.index:
            raise InputError(f"a DataFrame row has no {text_column!r} column; it has {list(sample.index)}")
        return sample.to_dict()
    if isinstance(sample, Mapping):
        if text_column not in sample:
            raise InputError(f"a sample dict has no {text_column!r} key; it has {list(sample)}")
        return dict(sample)
    text = getattr(sample, "text", None)
    if isinstance(text, str):  # the demo generator's Statement, or anything with .text / .label
        record = {text_column: text}
        if getattr(sample, "label", None) is not None:
            record["label"] = sample.label
        return record
    raise InputError(f"a sample must be a str, a DataFrame row, a dict or an object with .text; "
                     f"got {type(sample).__name__}")


def read_dataset(data, text_column: str = "text", label_column: str | None = "label") -> pd.DataFrame:
    """Statements from ``data`` as a DataFrame with ``text`` (and ``label`` when present).

    Args:
        data: a list of strings / DataFrame rows / dicts / objects with ``.text`` (the demo
            generator's statements), a DataFrame, or a path to a ``.csv``, ``.jsonl``,
            ``.json`` or ``.parquet`` file.
        text_column: the column holding the statement's text.
        label_column: the column holding the true label ("increase"/"decrease"), or None.
            A label column named but missing is an error only when it was asked for
            explicitly (not the default ``"label"``).
    """
    explicit_label = label_column not in (None, "label")
    if isinstance(data, (str, Path)) and Path(data).suffix.lower() in READERS:
        frame = _read_file(Path(data))
    elif isinstance(data, pd.DataFrame):
        frame = data.copy()
    elif isinstance(data, (list, tuple)):
        if not data:
            raise InputError("the dataset is empty: pass at least one statement")
        records = [_sample_text(s, text_column) for s in data]
        if isinstance(data[0], str) or hasattr(data[0], "text") and not isinstance(data[0], (pd.Series, Mapping)):
            records = [{text_column if k == "text" else k: v for k, v in r.items()} for r in records]
        frame = pd.DataFrame.from_records(records)
    elif isinstance(data, (str, Path)):
        raise InputError(f"{str(data)!r}: not a dataset file this reader knows (suffixes {sorted(READERS)}); "
                         "to analyse one statement, pass it inside a list")
    else:
        raise InputError(f"cannot read a dataset from {type(data).__name__}; pass a list, a DataFrame or a file path")
    if text_column not in frame.columns:
        raise InputError(f"the dataset has no text column {text_column!r}; its columns are {list(frame.columns)} "
                         "(pass text_column=...)")
    if frame.empty:
        raise InputError("the dataset is empty: it has no rows")
    frame = frame.rename(columns={text_column: "text"})
    bad = [i for i, t in enumerate(frame["text"]) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InputError(f"row(s) {bad[:10]} of the text column {text_column!r} are empty or not text")
    if label_column is not None:
        if label_column in frame.columns:
            frame = frame.rename(columns={label_column: "label"})
        elif explicit_label:
            raise InputError(f"the dataset has no label column {label_column!r}; its columns are "
                             f"{list(frame.drop(columns='text').columns) + [text_column]}")
    return frame.reset_index(drop=True)


def _read_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"dataset file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"dataset file {str(path)!r} is empty")
    kind = READERS[path.suffix.lower()]
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "jsonl":
            return pd.read_json(path, lines=True)
        if kind == "json":
            return pd.DataFrame(json.loads(path.read_text()))
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a corrupt file to the user
        raise InputError(f"dataset file {str(path)!r} could not be read as {kind}: {exc}") from None


def dataset_hash(frame: pd.DataFrame) -> str:
    """sha256 of the statements' texts and labels, in order (what the results depend on)."""
    digest = hashlib.sha256()
    labels = frame["label"] if "label" in frame else [None] * len(frame)
    for text, label in zip(frame["text"], labels):
        digest.update(json.dumps([text, None if pd.isna(label) else str(label)]).encode())
    return digest.hexdigest()
