"""Which line items a head reads: attention of one query position summed per line item.

A line item's tokens are every token on its line (name, "change", signs, the numbers
and their years), so the masses of the line items of a statement add up to at most 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finwidget.statement.layout import StatementLayout


def line_item_tokens(layout: StatementLayout) -> dict[str, np.ndarray]:
    """``{line item name: int64 token positions on its line}``, in statement order."""
    by_line: dict[int, list[int]] = {}
    for span in layout.spans:
        by_line.setdefault(span.line, []).extend(range(span.token_start, span.token_end))
    return {item.name: np.asarray(sorted(by_line.get(item.line, [])), dtype=np.int64) for item in layout.line_items}


def line_item_attention(row: np.ndarray, layout: StatementLayout) -> pd.DataFrame:
    """One query's attention ``row`` (``[T]``) summed per line item.

    Returns ``line_item, attention`` sorted by attention (largest first).
    """
    row = np.asarray(row, dtype=np.float64)
    items = line_item_tokens(layout)
    frame = pd.DataFrame(
        {"line_item": list(items), "attention": [float(row[tokens].sum()) if tokens.size else 0.0 for tokens in items.values()]}
    )
    return frame.sort_values("attention", ascending=False, kind="stable").reset_index(drop=True)
