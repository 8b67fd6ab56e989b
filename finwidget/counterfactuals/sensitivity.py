"""How the answer moves as one line item's number sweeps a range.

``sensitivity(model, tokenizer, statement, item, values)`` writes one counterfactual
statement per value (``SetValue``, or ``SetChange`` with ``quantity="change"``: the
item's current amount becomes previous + value, so the change column reads the value
and the statement stays consistent), runs them all and returns a
:class:`SensitivityCurve`: the logit difference (increase minus decrease) per value,
with its flip points (where the answer changes).

Batching: the prompts are grouped by token length and each group runs in batches of
``batch_size`` rows of equal length, so no row is padded and every row sees exactly the
positions it would see alone. What can still differ from one-at-a-time runs is the
float rounding of batched matrix products (measured in ``tests/test_counterfactual_sensitivity.py``).

Plotting lives in the widget layer: ``finwidget.plot_sensitivity(curve, explorer=None)``
(``finwidget.widgets.sensitivity_plot``) returns a bqplot figure.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from finwidget.errors import InputError
from finwidget.statement.edits import SetChange, SetValue, counterfactual
from finwidget.task import EarningsTask, context_length, model_device

QUANTITIES = ("value", "change")


@dataclass(frozen=True)
class FlipPoint:
    """Where the logit difference crosses zero between two swept values.

    at: the crossing by linear interpolation between ``below`` and ``above`` (the two
        swept values around it, ``below < above``); exactly a swept value when the logit
        difference is 0 there.
    direction: ``"up"`` when the answer turns to increase as the value grows, ``"down"`` when
        it turns to decrease.
    """

    at: float
    below: float
    above: float
    direction: str


@dataclass
class SensitivityCurve:
    """The logit difference as ``item``'s ``quantity`` sweeps ``values``.

    values: ``[N]`` float64, sorted ascending (as swept).
    logit_diff: ``[N]`` float64 logit difference (increase - decrease) for each value.
    counterfactuals: the ``N`` edited statements, in the order of ``values``.
    original_value: the item's ``quantity`` as written in the statement.
    original_logit_diff: the unedited statement's logit difference.
    labels: the task's two answers (``("increase", "decrease")``).
    """

    item: str
    quantity: str
    year: int | None
    values: np.ndarray
    logit_diff: np.ndarray
    counterfactuals: list = field(default_factory=list)
    original_value: float | None = None
    original_logit_diff: float | None = None
    labels: tuple[str, str] = ("increase", "decrease")

    @property
    def flip_points(self) -> list[FlipPoint]:
        """Every zero crossing of the logit difference, in order of value."""
        points = []
        values, diffs = self.values, self.logit_diff
        for k in range(len(values) - 1):
            a, b = diffs[k], diffs[k + 1]
            if a == 0 and k > 0:
                continue  # counted with the pair that ends on it
            if a == 0 or b == 0 or (a > 0) != (b > 0):
                if a == 0 and b == 0:
                    continue
                at = values[k] if a == 0 else values[k + 1] if b == 0 else (
                    values[k] + (values[k + 1] - values[k]) * a / (a - b))
                rising = b > a
                points.append(FlipPoint(float(at), float(values[k]), float(values[k + 1]), "up" if rising else "down"))
        return points

    def answers(self) -> list[str]:
        """The answer at each value (``labels[0]`` where the logit difference is > 0)."""
        return [self.labels[0] if d > 0 else self.labels[1] for d in self.logit_diff]

    def to_frame(self):
        """One row per value: ``value, logit_diff, p_increase, answer, text``."""
        import pandas as pd

        return pd.DataFrame({
            "value": self.values, "logit_diff": self.logit_diff,
            "p_increase": 1.0 / (1.0 + np.exp(-self.logit_diff)),
            "answer": self.answers(), "text": [cf.text for cf in self.counterfactuals],
        })

    def __repr__(self) -> str:
        flips = ", ".join(f"{p.at:g} ({p.direction})" for p in self.flip_points) or "none"
        return (f"SensitivityCurve({self.item} {self.quantity}: {len(self.values)} values "
                f"{self.values[0]:g}..{self.values[-1]:g}, flip points: {flips})")


def _check_values(values) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InputError(f"values must be a list of numbers to sweep, got {type(values).__name__}")
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    if not values:
        raise InputError("values is empty; pass the numbers to sweep (e.g. range(-2000, 2001, 100))")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v))]
    if bad:
        raise InputError(f"values must be finite numbers, got {bad[0]!r}")
    return np.asarray(values, dtype=np.float64)


def logit_diffs_by_length(model, task, texts: list[str], batch_size: int) -> np.ndarray:
    """``[N]`` logit differences of ``texts``, run in unpadded batches of equal token length."""
    limit = context_length(model)
    lengths = [task.encode(text, max_length=limit)["input_ids"].shape[1] for text in texts]
    out = np.full(len(texts), np.nan)
    device = model_device(model)
    for length in sorted(set(lengths)):
        rows = [k for k, n in enumerate(lengths) if n == length]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = task.encode([texts[k] for k in chunk], max_length=limit, device=device)
            diffs = task.logit_diff(task.answer_logits(model, batch)).double().cpu().numpy()
            out[chunk] = diffs
    if not np.isfinite(out).all():
        from finwidget.errors import NonFiniteError

        raise NonFiniteError("a logit difference of the sweep came out NaN or infinite")
    return out


def sensitivity(model, tokenizer, statement, item: str, values, *, year: int | None = None,
                quantity: str = "value", task=None, batch_size: int = 16, totals: dict | None = None,
                number_locale: str = "en") -> SensitivityCurve:
    """The logit difference as ``item``'s value (or change) sweeps ``values``.

    Args:
        model, tokenizer: the model and its tokenizer.
        statement: the statement's text or a demo ``Statement``.
        item: the line item to vary ("Net income").
        values: the amounts to try, as written in the statement (thousands in the demo).
        year: the year column (default: the item's most recent year).
        quantity: ``"value"`` sets the item's amount in ``year``; ``"change"`` sets its change
            from the year before (the amount of ``year`` becomes previous + value).
        task: an ``EarningsTask`` (default ``EarningsTask(tokenizer)``).
        batch_size: rows per forward pass.
        totals, number_locale: as for ``counterfactual``.

    Returns:
        ``SensitivityCurve`` (values sorted ascending).
    """
    if quantity not in QUANTITIES:
        raise InputError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if task is None:
        task = EarningsTask(tokenizer)
    elif not (callable(getattr(task, "encode", None)) and callable(getattr(task, "logit_diff", None))):
        raise InputError(f"task must be an EarningsTask, got {type(task).__name__}")
    swept = np.sort(_check_values(values), kind="stable")
    make = SetValue if quantity == "value" else SetChange
    edited = [counterfactual(statement, make(item, _plain(v), year), totals=totals, number_locale=number_locale)
              for v in swept]
    original = edited[0].original
    diffs = logit_diffs_by_length(model, task, [cf.text for cf in edited] + [original], batch_size)
    first = edited[0]
    wanted = " ".join(str(item).split()).lower()
    row = next((v for name, v in first.original_values.items() if " ".join(name.split()).lower() == wanted), {})
    if quantity == "change":
        original_value = row.get("change")
        if original_value is None:
            years = sorted((y for y in row if isinstance(y, int)), reverse=True)
            if year is not None:
                years = [y for y in years if y <= year]
            original_value = row[years[0]] - row[years[1]] if len(years) > 1 else None
    else:
        years = sorted((y for y in row if isinstance(y, int)), reverse=True)
        original_value = row.get(year if year is not None else (years[0] if years else None))
    return SensitivityCurve(item=item, quantity=quantity, year=year, values=swept, logit_diff=diffs[:-1],
                            counterfactuals=edited, original_value=original_value,
                            original_logit_diff=float(diffs[-1]), labels=_labels(task))


def _plain(value: float):
    """A swept float as the number to write: whole numbers as ints (no ``.0``)."""
    return int(value) if float(value).is_integer() else float(value)


def _labels(task) -> tuple[str, str]:
    first, second = tuple(getattr(task, "labels", ("increase", "decrease")))[:2]
    return str(first), str(second)
