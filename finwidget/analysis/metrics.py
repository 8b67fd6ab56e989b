"""Per-head measures: one definition of each number the explorer's grid shows.

Each :class:`HeadMeasure` is one object: its name, a label, its unit, one sentence on how
it is computed, which way is "more" (``direction``) and, for attention measures, the
function that computes it for every head at once, ``[L, H]`` float32 (NaN on layers the
attention source does not hold). :func:`head_metric_table` puts any of them in a
DataFrame; the explorer's grid shows exactly these values (tests compare them).

The query rows: a measure reads the attention of the answer position (the last token
of the prompt, where "increase"/"decrease" is predicted). Measures with
``uses_selection`` read the selection instead where the docstring says so; a selection is
a half-open range ``(start, end)`` of span indices (``layout.spans[start:end]``), as the
explorer's ``selection`` trait holds it.

Definitions unified with the rest of the analysis layer:

- ``entropy`` is the **normalized** entropy of ``head_specialization``,
  ``H(A[i, :]) / log(i + 1)`` for query token ``i`` (0 = all attention on one key,
  1 = uniform over the causal window ``0..i``; a window of one key counts 0), averaged over
  the query rows. ``head_specialization``'s ``entropy`` column is the same per-row value
  averaged over *every* query row; the grid reads the answer position's row (or the
  selection's). The raw entropy in nats, which the grid showed before, is kept as
  ``entropy_nats``. Dark = more entropy = more diffuse attention.
- ``financial_attention`` counts the spans the analyzer counts: ``layout.financial_spans()``
  (financial terms and line item names), the same tokens as ``head_specialization``'s
  ``financial_attention`` column and ``analyze_prediction_attention``'s
  ``financial_attention`` (whose ``per_head`` values equal this measure's).
  The grid's former "financial focus" set (financial terms, line item names *and* the
  line items' numbers, statement only) is kept under its own name, ``financial_focus``.

Measures whose ``needs`` is ``"model"`` or ``"sweep"`` are described here but computed
elsewhere: ``direct_logit_diff`` by :func:`finwidget.analysis.decision_pathway`
(``.heads["contribution"]``), ``ablation_effect`` by
:func:`finwidget.interventions.sweep.sweep_heads` (``change``).

Add an attention measure: write its function ``(source, layout, selection) -> [L, H]``
and add one :class:`HeadMeasure` to ``HEAD_MEASURES`` below; the grid's menu, the
widget's protocol and :func:`head_metric_table` pick it up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
import torch

from finwidget.analysis.source import as_attention_source, check_layers, token_columns
from finwidget.errors import InputError
from finwidget.statement.layout import StatementLayout

#: ``direction`` values: "more" = a larger value is more of what the name says (drawn
#: darker); "signed" = diverging around 0 (red raises the logit difference, blue lowers it).
DIRECTIONS = ("more", "signed")
#: ``needs`` values: what computes the measure.
NEEDS = ("attention", "model", "sweep")
#: The explorer's direction switch: "to" = attention paid *to* the selection, "from" =
#: attention *from* the selection's tokens (measures with ``follows_direction`` read it).
SELECTION_DIRECTIONS = ("from", "to")

Selection = tuple[int, int] | None
MeasureFunction = Callable[[object, StatementLayout, Selection], np.ndarray]


@dataclass(frozen=True)
class HeadMeasure:
    """One per-head measure.

    name: its key (grid menu, ``head_metric_table`` column, protocol).
    label: short text for a menu.
    unit: e.g. ``"attention mass"``, ``"fraction of log(window)"``, ``"logits"``.
    description: how it is computed, in one sentence (shown under the grid).
    direction: ``"more"`` or ``"signed"`` (see ``DIRECTIONS``).
    uses_selection: whether the selection changes its value.
    legend: the grid's legend, ``{what}`` replaced by the selection's text in quotes (or
        by ``default_what`` without a selection).
    default_what: what ``{what}`` is without a selection.
    needs: ``"attention"`` (``compute`` is set), ``"model"`` or ``"sweep"``.
    compute: ``(attention source, layout, selection) -> [L, H] float32``; for a measure
        that follows the direction switch, its "to" reading.
    compute_from: the "from" reading of a measure that follows the direction switch
        (``follows_direction`` is then True); None otherwise.
    legend_from: the legend of the "from" reading (``{what}`` as in ``legend``).
    """

    name: str
    label: str
    unit: str
    description: str
    direction: str
    uses_selection: bool
    legend: str
    default_what: str = ""
    needs: str = "attention"
    compute: MeasureFunction | None = None
    compute_from: MeasureFunction | None = None
    legend_from: str = ""

    @property
    def follows_direction(self) -> bool:
        """Whether the explorer's direction switch ("from" / "to") changes its value."""
        return self.compute_from is not None

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.needs not in NEEDS:
            raise ValueError(f"needs must be one of {NEEDS}, got {self.needs!r}")
        if (self.compute is None) != (self.needs != "attention"):
            raise ValueError(f"{self.name}: attention measures need compute=, the others must not have one")
        if self.compute_from is not None and not (self.uses_selection and self.legend_from):
            raise ValueError(f"{self.name}: a measure with compute_from= uses the selection and has legend_from=")

    def values(self, source, layout: StatementLayout, selection: Selection = None, direction: str = "to") -> np.ndarray:
        """``[L, H]`` float32: ``compute`` (or ``compute_from`` for direction "from" when
        the measure follows the direction switch; other measures ignore ``direction``)."""
        if direction not in SELECTION_DIRECTIONS:
            raise InputError(f"direction must be one of {SELECTION_DIRECTIONS}, got {direction!r}")
        if self.compute is None:
            raise InputError(f"{self.name} is not computed from attention")
        if direction == "from" and self.compute_from is not None:
            return self.compute_from(source, layout, selection)
        return self.compute(source, layout, selection)

    def legend_for(self, selection_text: str = "", direction: str = "to") -> str:
        """The grid's legend for a selection's text ("" = no selection) and direction."""
        what = f"“{selection_text}”" if selection_text and self.uses_selection else self.default_what
        if direction == "from" and self.follows_direction:
            return self.legend_from.format(what=f"“{selection_text}”" if selection_text else "the answer position")
        return self.legend.format(what=what)

    def to_dict(self) -> dict:
        """What the widget receives at start-up: every field but ``compute`` and the legend."""
        return {
            "name": self.name,
            "label": self.label,
            "unit": self.unit,
            "description": self.description,
            "direction": self.direction,
            "uses_selection": self.uses_selection,
            "follows_direction": self.follows_direction,
            "needs": self.needs,
        }


# ---------------------------------------------------------------------------- token sets and rows
def selection_tokens(layout: StatementLayout, selection: Selection) -> np.ndarray:
    """Span range ``(start, end)`` -> sorted int64 token positions of those spans (empty for None)."""
    if not selection:
        return np.zeros(0, dtype=np.int64)
    start, end = selection
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= layout.num_spans):
        raise InputError(
            f"selection must be (start, end) span indices with 0 <= start < end <= {layout.num_spans}, "
            f"got {selection!r}"
        )
    tokens = {t for s in layout.spans[start:end] for t in range(s.token_start, s.token_end)}
    return np.asarray(sorted(tokens), dtype=np.int64)


def _statement_numbers(layout: StatementLayout) -> np.ndarray:
    return layout.token_mask(s for s in layout.spans if s.kind == "number" and s.in_statement)


def _line_item_focus(layout: StatementLayout) -> np.ndarray:
    return layout.token_mask(
        s
        for s in layout.spans
        if s.in_statement and (s.is_financial or (s.kind == "number" and s.line_item is not None))
    )


def _query_rows(source, layout: StatementLayout, layer: int, queries: np.ndarray) -> torch.Tensor:
    """``[H, q, n]`` float32: every head's attention from layout tokens ``queries`` to the layout's tokens."""
    cols = token_columns(source, 0, layout)
    rows = source.attention(layer, head=None, query=cols.columns[torch.as_tensor(queries)].tolist())
    if rows.dim() == 2:
        rows = rows[:, None, :]
    return rows[..., cols.columns.to(rows.device)].float().cpu()


def _per_layer(source, layout: StatementLayout, queries: np.ndarray, reduce) -> np.ndarray:
    """``[L, H]`` float32: ``reduce(rows [H, q, n], queries) -> [H]`` on every held layer, NaN elsewhere."""
    out = np.full((source.num_layers, source.num_heads), np.nan, dtype=np.float32)
    for layer in check_layers(source, None):
        out[layer] = reduce(_query_rows(source, layout, layer, queries), queries).numpy()
    return out


def _answer(layout: StatementLayout) -> np.ndarray:
    return np.asarray([layout.num_tokens - 1], dtype=np.int64)


def _mass_on(mask: np.ndarray):
    """A reducer: each head's attention mass on the tokens of ``mask``, averaged over the query rows."""
    keys = torch.from_numpy(np.asarray(mask, dtype=bool))

    def reduce(rows: torch.Tensor, _queries) -> torch.Tensor:
        return rows[..., keys].sum(-1).mean(-1)

    return reduce


def row_entropy(rows: torch.Tensor, queries, normalized: bool = True) -> torch.Tensor:
    """``[..., q]`` entropy of attention rows ``[..., q, n]`` of query tokens ``queries``.

    ``normalized``: divided by ``log(i + 1)``, the entropy of uniform attention over query
    ``i``'s causal window (a window of one key has entropy 0); else nats.
    """
    # -sum p log p (0 log 0 = 0). Same values as torch.special.entr(rows).sum(-1), bit for bit
    # (negating is exact, so it moves after the sum; 0 - x, not -x, so a one-hot row gives +0.0),
    # and no slower on CPU, a little faster on causal rows with their zero upper triangle
    entropy = 0.0 - torch.xlogy(rows, rows).sum(-1)
    if not normalized:
        return entropy
    window = torch.log(torch.as_tensor(np.asarray(queries), dtype=torch.float32, device=rows.device) + 1.0)
    return torch.where(window > 0, entropy / torch.where(window > 0, window, 1.0), torch.zeros_like(entropy))


# ---------------------------------------------------------------------------- the measures
def attention_to_selection(source, layout: StatementLayout, selection: Selection = None) -> np.ndarray:
    """``[L, H]``: the answer position's attention mass on the selection's tokens (on the
    statement's numbers without a selection)."""
    tokens = selection_tokens(layout, selection)
    mask = np.zeros(layout.num_tokens, dtype=bool)
    mask[tokens] = True
    return _per_layer(source, layout, _answer(layout), _mass_on(mask if tokens.size else _statement_numbers(layout)))


def attention_from_selection(source, layout: StatementLayout, selection: Selection = None) -> np.ndarray:
    """``[L, H]``: the attention mass the selection's tokens pay to the statement's numbers,
    averaged over the selection's tokens (the answer position's without a selection, which
    equals :func:`attention_to_selection` without a selection). The "from" reading of
    ``attention_to_selection``: how much the selection itself looks at the numbers."""
    return _per_layer(source, layout, _queries(layout, selection), _mass_on(_statement_numbers(layout)))


def _queries(layout: StatementLayout, selection: Selection) -> np.ndarray:
    tokens = selection_tokens(layout, selection)
    return tokens if tokens.size else _answer(layout)


def entropy(source, layout: StatementLayout, selection: Selection = None) -> np.ndarray:
    """``[L, H]``: normalized entropy of the selection's attention rows (the answer
    position's without a selection), averaged over those rows."""
    return _per_layer(source, layout, _queries(layout, selection), lambda rows, q: row_entropy(rows, q).mean(-1))


def entropy_nats(source, layout: StatementLayout, selection: Selection = None) -> np.ndarray:
    """``[L, H]``: entropy in nats of the same rows as :func:`entropy`."""
    return _per_layer(
        source, layout, _queries(layout, selection), lambda rows, q: row_entropy(rows, q, normalized=False).mean(-1)
    )


def financial_attention(source, layout: StatementLayout, selection: Selection = None) -> np.ndarray:
    """``[L, H]``: the answer position's attention mass on ``layout.financial_spans()``."""
    return _per_layer(source, layout, _answer(layout), _mass_on(layout.token_mask(layout.financial_spans())))


def financial_focus(source, layout: StatementLayout, selection: Selection = None) -> np.ndarray:
    """``[L, H]``: the answer position's attention mass on the statement's financial terms,
    line item names and line items' numbers."""
    return _per_layer(source, layout, _answer(layout), _mass_on(_line_item_focus(layout)))


HEAD_MEASURES: tuple[HeadMeasure, ...] = (
    HeadMeasure(
        name="attention_to_selection",
        label="attention to selection",
        unit="attention mass",
        description="direction \"to\": attention the answer position pays to the selected spans (to all "
        "numbers when nothing is selected); direction \"from\": attention the selected tokens pay to the "
        "statement's numbers",
        direction="more",
        uses_selection=True,
        legend="answer position's attention to {what}",
        default_what="the numbers",
        compute=attention_to_selection,
        compute_from=attention_from_selection,
        legend_from="attention of {what} to the statement's numbers",
    ),
    HeadMeasure(
        name="entropy",
        label="entropy",
        unit="fraction of uniform",
        description="entropy of the attention of the selected tokens (of the answer position without a "
        "selection), divided by that of uniform attention over the tokens it can see: 0 = one token, "
        "1 = spread evenly; dark = diffuse",
        direction="more",
        uses_selection=True,
        legend="normalized entropy of the attention of {what}",
        default_what="the answer position",
        compute=entropy,
    ),
    HeadMeasure(
        name="entropy_nats",
        label="entropy (nats)",
        unit="nats",
        description="entropy in nats of the attention of the selected tokens (of the answer position without "
        "a selection); dark = diffuse",
        direction="more",
        uses_selection=True,
        legend="entropy (nats) of the attention of {what}",
        default_what="the answer position",
        compute=entropy_nats,
    ),
    HeadMeasure(
        name="financial_attention",
        label="financial attention",
        unit="attention mass",
        description="share of the answer position's attention on financial terms and line item names "
        "(the analyzer's financial spans)",
        direction="more",
        uses_selection=False,
        legend="answer position's attention to financial terms and line item names",
        compute=financial_attention,
    ),
    HeadMeasure(
        name="financial_focus",
        label="financial focus",
        unit="attention mass",
        description="share of the answer position's attention on financial terms, line item names and their "
        "numbers",
        direction="more",
        uses_selection=False,
        legend="answer position's attention to financial terms and line items",
        compute=financial_focus,
    ),
    HeadMeasure(
        name="direct_logit_diff",
        label="direct logit-diff contribution",
        unit="logits",
        description="the head's direct contribution to the logit difference (increase − decrease) through "
        "the residual stream, final norm frozen",
        direction="signed",
        uses_selection=False,
        legend="direct contribution to the logit difference",
        needs="model",
    ),
    HeadMeasure(
        name="ablation_effect",
        label="ablation effect",
        unit="logits",
        description="change in the logit difference when the head alone is ablated (Sweep); red raises "
        "'increase', blue lowers it",
        direction="signed",
        uses_selection=False,
        legend="change in logit difference when each head is ablated ({what})",
        needs="sweep",
    ),
    HeadMeasure(
        name="mean_abs_change",
        label="sweep: mean |change| over statements",
        unit="logits",
        description="mean over the explorer's statements of |change in the logit difference| when the head "
        "alone is ablated (summarize_sweep's mean_abs_change; Sweep over all statements)",
        direction="more",
        uses_selection=False,
        legend="mean |change in logit difference| when each head is ablated ({what})",
        needs="sweep",
    ),
    HeadMeasure(
        name="flip_rate",
        label="sweep: flip rate over statements",
        unit="fraction of statements",
        description="share of the explorer's statements whose predicted label flips when the head alone is "
        "ablated (summarize_sweep's flip_rate; Sweep over all statements)",
        direction="more",
        uses_selection=False,
        legend="share of statements whose answer flips when each head is ablated ({what})",
        needs="sweep",
    ),
)

_BY_NAME = {m.name: m for m in HEAD_MEASURES}
#: names of the measures computed from attention alone
ATTENTION_MEASURES = tuple(m.name for m in HEAD_MEASURES if m.needs == "attention")


def head_measure(name: str) -> HeadMeasure:
    """The measure called ``name`` (``InputError`` naming the known ones otherwise)."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown head measure {name!r}; known: {', '.join(_BY_NAME)}") from None


def measure_catalogue() -> list[dict]:
    """Every measure as a dict (``HeadMeasure.to_dict``), in menu order."""
    return [m.to_dict() for m in HEAD_MEASURES]


def head_metric_table(
    attention,
    layout: StatementLayout,
    names: Iterable[str] | None = None,
    selection: Sequence[int] | None = None,
    direction: str = "to",
) -> pd.DataFrame:
    """One row per (layer, head) held by ``attention``: ``layer``, ``head`` and one column per measure.

    Args:
        attention: an ``AttentionCapture`` (or anything ``as_attention_source`` takes);
            batch row 0, whose tokens are ``layout``'s.
        layout: ``read_statement`` of the tokens the model ran.
        names: attention measures to compute (default: every one in ``ATTENTION_MEASURES``).
        selection: ``(start, end)`` span range, as the explorer's selection; None = none.
        direction: ``"to"`` or ``"from"``, the explorer's direction switch; measures with
            ``follows_direction`` give their "from" reading for ``"from"``, the others ignore it.
    """
    source = as_attention_source(attention)
    names = list(ATTENTION_MEASURES if names is None else names)
    measures = [head_measure(n) for n in names]
    for m in measures:
        if m.needs != "attention":
            where = "decision_pathway(...).heads" if m.needs == "model" else "sweep_heads(...)"
            raise InputError(f"{m.name} is not computed from attention: use {where}")
    if direction not in SELECTION_DIRECTIONS:
        raise InputError(f"direction must be one of {SELECTION_DIRECTIONS}, got {direction!r}")
    span_range = cast(Selection, tuple(selection) if selection else None)
    layers = check_layers(source, None)
    frame = pd.DataFrame(
        {
            "layer": np.repeat(layers, source.num_heads),
            "head": np.tile(np.arange(source.num_heads), len(layers)),
        }
    )
    for m in measures:
        frame[m.name] = m.values(source, layout, span_range, direction)[layers].reshape(-1)
    return frame
