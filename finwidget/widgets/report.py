"""``finwidget report``: a standalone analysis page of one or several statements.

The page holds, above the explorer: the model's prediction for the statement shown;
the sweep (every head ablated alone, over every statement) as a table; the top heads
with the line items they read at the answer position; and a one-paragraph summary.
Below, the explorer itself, focused on the sweep's top head with the grid coloured by
the sweep, and every head's data embedded (up to a stated size limit) so focusing
another head works offline. Controls that need the kernel are disabled, with the reason
shown, by the frontend's offline mode.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pandas as pd

from finwidget.analysis.line_items import line_item_attention
from finwidget.widgets.export import DEFAULT_MAX_EMBEDDED_BYTES

#: how many heads the report describes, and how many line items per head
TOP_HEADS = 3
LINE_ITEMS_PER_HEAD = 3
#: rows of the sweep table shown
SWEEP_ROWS = 10


@dataclass
class HeadReading:
    """One top head: its sweep row and what its answer-position attention reads."""

    layer: int
    head: int
    mean_abs_change: float
    flip_rate: float
    line_items: pd.DataFrame  # line_item, attention (largest first)


@dataclass
class Analysis:
    """What the report says: the sweep summary (one row per head, largest effect first),
    the top heads and the summary paragraph."""

    prediction: dict
    summary: pd.DataFrame
    top: list[HeadReading]
    paragraph: str
    mode: str
    n_statements: int


def analyse(explorer, mode: str = "zero", top: int = TOP_HEADS) -> Analysis:
    """Sweep ``explorer``'s statements with ``mode``, focus its top head and describe the top heads.

    The line items a head reads are read in the statement shown (the explorer's current one).
    """
    from finwidget.interventions.sweep import summarize_sweep

    n = explorer.num_statements
    if n > 1:
        summary = explorer.sweep(mode, statements="all")
    else:
        summary = summarize_sweep(explorer.sweep(mode))
    best = summary.head(1).to_dict("records")[0]
    explorer.focus = {"layer": int(best["layer"]), "head": int(best["head"])}
    if n > 1:
        explorer.grid_measure = "mean_abs_change"
    session = explorer.session
    readings = []
    for row in summary.head(top).to_dict("records"):
        layer, head = int(row["layer"]), int(row["head"])
        answer_row = session.head_matrix(layer, head)[session.answer_position]
        readings.append(
            HeadReading(layer, head, float(row["mean_abs_change"]), float(row["flip_rate"]),
                        line_item_attention(answer_row, session.layout).head(LINE_ITEMS_PER_HEAD))
        )
    paragraph = _paragraph(explorer.prediction, summary, readings, mode, n)
    return Analysis(explorer.prediction, summary, readings, paragraph, mode, n)


def _paragraph(prediction: dict, summary: pd.DataFrame, readings: list[HeadReading], mode: str, n: int) -> str:
    clean = prediction.get("clean") or {}
    over = f"over {n} statements" if n > 1 else "on this statement"
    first = readings[0]
    rest = summary.iloc[1:]
    second = float(rest["mean_abs_change"].iloc[0]) if len(rest) else 0.0
    text = (
        f"The model answers “{clean.get('label', '?')}” (logit difference {clean.get('logit_diff', float('nan')):+.2f}, "
        f"p(increase) {clean.get('p_increase', float('nan')):.3f}). Ablating each head alone ({mode}) {over}, "
        f"layer {first.layer} head {first.head} matters most: it moves the logit difference by "
        f"{first.mean_abs_change:.2f} on average"
    )
    if n > 1:
        text += f" and flips {first.flip_rate:.0%} of the answers"
    text += f"; the next head moves it by {second:.2f}. "
    reading = [r for r in readings if len(r.line_items)]
    if not reading:  # e.g. a statement truncated to its last tokens, or one without line items
        return text + "The statement shows no line items the reader recognised, so no head's reading is named."
    reads = "; ".join(
        f"L{r.layer}H{r.head} puts {r.line_items['attention'].iloc[0]:.2f} of its answer-position attention on "
        f"“{r.line_items['line_item'].iloc[0]}”"
        + (f" and {r.line_items['attention'].iloc[1]:.2f} on “{r.line_items['line_item'].iloc[1]}”" if len(r.line_items) > 1 else "")
        for r in reading
    )
    return text + f"At the answer position, {reads}."


def _table(frame: pd.DataFrame, testid: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):  # keeps each column's type (iterrows makes ints floats)
        cells = []
        for value in row:
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="fw-report-table" data-testid="{testid}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def report_html(analysis: Analysis, model_name: str, embedded: dict) -> str:
    """The report's sections above the explorer (escaped markup)."""
    e = html.escape
    clean = analysis.prediction.get("clean") or {}
    columns = ["layer", "head", "mean_change", "mean_abs_change", "flip_rate", "n_statements"]
    table = cast(pd.DataFrame, analysis.summary.head(SWEEP_ROWS)[columns])  # a column list gives a frame
    heads = []
    for r in analysis.top:
        items = "".join(
            f'<li data-line-item="{e(str(item))}">{e(str(item))}: {attention:.3f}</li>'
            for item, attention in zip(r.line_items["line_item"], r.line_items["attention"])
        )
        heads.append(
            f'<li data-testid="top-head" data-layer="{r.layer}" data-head="{r.head}">layer {r.layer} head {r.head} '
            f"(mean |change| {r.mean_abs_change:.2f}, flip rate {r.flip_rate:.0%}) reads:<ul>{items}</ul></li>"
        )
    limit = embedded.get("max_bytes", DEFAULT_MAX_EMBEDDED_BYTES)
    data_note = (
        f"Every head's data is embedded ({embedded.get('heads_embedded')} of {embedded.get('heads_total')} heads, "
        f"{embedded.get('bytes', 0) / 2**20:.1f} MiB; limit {limit / 2**20:.0f} MiB), so focusing any head works offline."
        if embedded.get("heads_embedded") == embedded.get("heads_total")
        else f"The data of {embedded.get('heads_embedded')} of {embedded.get('heads_total')} heads is embedded "
        f"(the {limit / 2**20:.0f} MiB limit was reached); focusing the others needs the live notebook."
    )
    style = (
        ".fw-report{font:13px/1.45 system-ui,sans-serif;max-width:1100px;margin:0 auto 12px;}"
        ".fw-report-table{border-collapse:collapse;font-size:12px}"
        ".fw-report-table td,.fw-report-table th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    )
    return f"""<style>{style}</style>
<section class="fw-report" data-testid="report">
<h1>finwidget analysis · {e(model_name)}</h1>
<h2>Prediction</h2>
<p data-testid="report-prediction">“{e(str(clean.get('label', '?')))}”: logit difference (increase − decrease)
{clean.get('logit_diff', float('nan')):+.3f}, p(increase) {clean.get('p_increase', float('nan')):.3f}.</p>
<h2>Summary</h2>
<p data-testid="report-summary">{e(analysis.paragraph)}</p>
<h2>Top heads and the line items they read (answer position)</h2>
<ol data-testid="top-heads">{''.join(heads)}</ol>
<h2>Sweep: each head ablated alone ({e(analysis.mode)}, {analysis.n_statements} statement{'s' if analysis.n_statements != 1 else ''})</h2>
{_table(table, "sweep-table")}
<p>The grid below is coloured by this sweep; the explorer is focused on the top head. {e(data_note)}</p>
</section>"""


def write_report(model, tokenizer, statements, output, mode: str = "zero", reference=None,
                 max_bytes: int = DEFAULT_MAX_EMBEDDED_BYTES, truncate: bool = False) -> Path:
    """Analyse ``statements`` (one or several) and write the report page to ``output``."""
    from finwidget.widgets import AttentionExplorer

    explorer = AttentionExplorer(model, tokenizer, statements, reference=reference, truncate=truncate)
    return write_explorer_report(explorer, output, mode=mode, max_bytes=max_bytes)


def write_explorer_report(explorer, output, mode: str = "zero",
                          max_bytes: int = DEFAULT_MAX_EMBEDDED_BYTES) -> Path:
    """Write the report page of an explorer already built (its statements, model and reference)."""
    from finwidget.widgets.export import embedded_replies, save_explorer_html

    analysis = analyse(explorer, mode)
    embedded: dict = {}
    replies = embedded_replies(explorer, "all", max_bytes=max_bytes, report=embedded)
    name = str(explorer.geometry.get("model_name", ""))
    return save_explorer_html(explorer, output, title=f"finwidget analysis · {name}", heads="all",
                              before_html=report_html(analysis, name, embedded), replies=replies)
