"""Grow a pruned circuit until it is faithful: kept and removed both at least a target.

The pruned graph of :func:`finwidget.circuits.find_circuit` keeps the strongest first-order
edges; nothing in that choice guarantees that ablating everything outside it keeps the
answer (under mean ablation a head with a small first-order edge can still carry part of
the answer through its whole output). :func:`grow_to_target` adds heads in the order of
their first-order score (``|head effect|``: patching the head's whole output from the
reference, the first-order estimate of ablating it) and checks each candidate circuit
with the real ablations of :mod:`finwidget.circuits.faithfulness`:

- the candidates are the pruned circuit plus the first ``k`` ranked heads, for ``k = 0, 1,
  ..., 8`` and then ``k`` growing by a quarter each time (up to ``max_heads`` heads in the
  circuit), so the number of candidates is logarithmic in the model's heads;
- they are measured a round of ``per_round`` candidates at a time, each round one batched
  call (``2 * per_round + 1`` ablated forward passes of the statements), stopping at the
  first round that holds a candidate meeting the target; the smallest such candidate wins;
- when no candidate reaches the target, the one with the largest ``min(kept, removed)`` is
  returned and the result says the target was not reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finwidget.circuits.faithfulness import faithfulness_of_circuits
from finwidget.errors import InputError


@dataclass(frozen=True)
class Growth:
    """The outcome of :func:`grow_to_target`.

    heads: the circuit's heads ``[(layer, head), ...]`` (the pruned ones first, then the added
        ones in the order they were added).
    added: the heads added to the pruned circuit.
    shares: the chosen circuit's faithfulness shares (``kept``, ``removed``, ``kept_raw``,
        ``removed_raw``).
    reached: whether both ``kept`` and ``removed`` reached the target.
    circuits_measured: how many candidate circuits were ablated (2 forward passes each, plus
        one all-ablated pass per round).
    """

    heads: list[tuple[int, int]]
    added: list[tuple[int, int]]
    shares: dict[str, float]
    reached: bool
    circuits_measured: int


def prefix_sizes(available: int, start: int = 0, linear: int = 8, growth: float = 1.25) -> list[int]:
    """How many ranked heads each candidate adds: ``start, start + 1, ..., linear``, then ``x1.25``
    steps, always ending at ``available``."""
    sizes = list(range(start, min(linear, available) + 1))
    size = sizes[-1] if sizes else start
    while size < available:
        size = min(available, max(size + 1, round(size * growth)))
        sizes.append(size)
    return sizes


def grow_to_target(model, task, statements, pruned: Sequence[tuple[int, int]], ranked: Sequence[tuple[int, int]],
                   *, target: float, reference=None, mode: str = "mean", max_heads: int | None = None,
                   per_round: int = 8) -> Growth:
    """The smallest circuit ``pruned + ranked[:k]`` (over the candidate ``k``, see the module
    docstring) whose ``kept`` and ``removed`` are both at least ``target`` on ``statements``.

    Args:
        pruned: the pruned circuit's heads (may be empty).
        ranked: the other heads, best first (heads already in ``pruned`` are skipped).
        target: the share both ``kept`` and ``removed`` must reach, in (0, 1].
        max_heads: the largest circuit tried (default: every head, which always reaches the
            target: ablating everything outside it changes nothing).
        per_round: candidates measured per batched call.
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise InputError(f"faithfulness_target must be a number in (0, 1], got {target!r}")
    if isinstance(per_round, bool) or not isinstance(per_round, int) or per_round < 1:
        raise InputError(f"per_round must be an int >= 1, got {per_round!r}")
    base = list(dict.fromkeys((int(l), int(h)) for l, h in pruned))
    extra = [head for head in dict.fromkeys((int(l), int(h)) for l, h in ranked) if head not in base]
    limit = len(base) + len(extra) if max_heads is None else max(len(base), int(max_heads))
    available = max(0, min(len(extra), limit - len(base)))
    sizes = prefix_sizes(available, start=0 if base else 1)
    if not sizes:
        raise InputError("there are no heads to build a circuit from")
    best: tuple[float, int, dict[str, float]] | None = None
    measured = 0
    for start in range(0, len(sizes), per_round):
        chunk = sizes[start:start + per_round]
        shares = faithfulness_of_circuits(model, task, statements, [base + extra[:k] for k in chunk],
                                          reference=reference, mode=mode)
        measured += len(chunk)
        for k, share in zip(chunk, shares, strict=True):
            if share["kept"] >= target and share["removed"] >= target:
                return Growth(base + extra[:k], extra[:k], share, True, measured)
            score = min(share["kept"], share["removed"])
            if best is None or score > best[0]:
                best = (score, k, share)
    assert best is not None
    _, k, share = best
    return Growth(base + extra[:k], extra[:k], share, False, measured)
