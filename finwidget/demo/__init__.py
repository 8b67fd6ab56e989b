"""The offline demo: synthetic statements with a planted rule, and a small Qwen2 trained on them.

- ``make_statements(n, seed)`` / ``make_statement_pairs(n, seed)``: the statement generator
  (``finwidget.demo.statements``), the rule in ``RULE``.
- ``MODEL_DIR``: the folder of the shipped model (weights, config, tokenizer, ``MODEL_CARD.md``);
  load it with ``finwidget.load_demo_model()``.
- ``python -m finwidget.demo.train`` rebuilds the model, ``python -m finwidget.demo.evaluate``
  measures its held-out accuracy.
"""

from pathlib import Path

from finwidget.demo.statements import (
    LINE_ITEMS,
    RULE,
    RULE_ITEMS,
    Statement,
    StatementPair,
    label_for,
    make_statement_pairs,
    make_statements,
)

MODEL_DIR: Path = Path(__file__).resolve().parent / "model"

__all__ = [
    "LINE_ITEMS",
    "MODEL_DIR",
    "RULE",
    "RULE_ITEMS",
    "Statement",
    "StatementPair",
    "label_for",
    "make_statement_pairs",
    "make_statements",
]
