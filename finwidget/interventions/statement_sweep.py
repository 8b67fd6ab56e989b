"""A head sweep over several statements that reports progress and can be stopped.

:func:`sweep_statements` is :func:`~finwidget.interventions.sweep.sweep_heads` one
statement at a time (each through :func:`~finwidget.interventions.sweep.sweep_run` on its
own :class:`~finwidget.interventions.cached_run.CachedRun`), so a caller (the explorer)
can show progress per head and stop between heads. The table it returns has the
``sweep_heads`` columns plus ``statement``; :func:`~finwidget.interventions.sweep.summarize_sweep`
turns it into mean |change| and flip rate per head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import pandas as pd

from finwidget.errors import InputError


class SweepCancelled(InputError):
    """The sweep was stopped by its caller before every head of every statement ran."""

    def __init__(self, done: int, total: int):
        super().__init__(f"sweep cancelled after {done} of {total} head ablations")
        self.done, self.total = done, total


class _Counter:
    """``update(n)`` (what ``sweep_run`` calls) -> ``progress(done, total)``; stops on request."""

    def __init__(self, total: int, progress, should_stop):
        self.total, self.done = total, 0
        self.progress, self.should_stop = progress, should_stop

    def update(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)
        if self.should_stop is not None and self.should_stop():
            raise SweepCancelled(self.done, self.total)


def sweep_statements(
    model,
    task,
    texts: Sequence[str],
    heads: Sequence[tuple[int, int]],
    mode: str = "zero",
    value: float | None = None,
    reference=None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> pd.DataFrame:
    """Ablate each of ``heads`` alone with ``mode`` on each statement of ``texts``.

    Args:
        model, task: the causal LM and its :class:`~finwidget.task.EarningsTask`.
        texts: the statements (``N`` strings).
        heads: ``(layer, head)`` pairs.
        mode, value, reference: as :func:`~finwidget.interventions.sweep.sweep_heads`
            (``reference``: statements, a batch or recorded ``HeadOutputs`` for "mean").
        progress: called as ``progress(done, total)`` after each head ablation
            (``total = N * len(heads)``).
        should_stop: polled after each head ablation; when it returns True the sweep
            raises :class:`SweepCancelled` (nothing about the model is left changed).

    Returns:
        ``layer, head, mode, logit_diff, clean_logit_diff, change, flipped, statement``:
        one row per (head, statement), ordered by statement then head.
    """
    from finwidget.interventions.cached_run import CachedRun
    from finwidget.interventions.sweep import SWEEP_COLUMNS, sweep_run

    texts = list(texts)
    if not texts:
        raise InputError("sweep_statements needs at least one statement")
    heads = [(int(layer), int(head)) for layer, head in heads]
    if not heads:
        raise InputError("sweep_statements needs at least one (layer, head)")
    counter = _Counter(len(texts) * len(heads), progress, should_stop)
    frames = []
    for index, text in enumerate(texts):
        run = CachedRun(model, task, text)
        frame = sweep_run(run, heads, mode, value, reference=reference, progress=counter)
        frame["statement"] = index
        frames.append(frame)
    return cast(pd.DataFrame, pd.concat(frames, ignore_index=True)[SWEEP_COLUMNS + ["statement"]])
