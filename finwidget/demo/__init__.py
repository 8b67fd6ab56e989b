"""The offline demo: synthetic statements with a planted rule, and a small Qwen2 trained on them.

- ``make_statements(n, seed)`` / ``make_statement_pairs(n, seed)``: the statement generator
  (``finwidget.demo.statements``), the rule in ``RULE``.
- ``MODEL_DIR``: the folder of the shipped model (weights, config, tokenizer, ``MODEL_CARD.md``);
  load it with ``finwidget.load_demo_model()``.
- ``LAYOUTS_MODEL_DIR``: a second demo model, trained on the same rule written in three
  layouts (line, markdown table, aligned text table; ``make_statements(layout=...)``);
  load it with ``finwidget.load_demo_model("layouts")``.
- ``python -m finwidget.demo.train`` rebuilds the model, ``python -m finwidget.demo.evaluate``
  measures its held-out accuracy.
"""

from pathlib import Path

from finwidget.demo.statements import (
    LAYOUTS,
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
LAYOUTS_MODEL_DIR: Path = Path(__file__).resolve().parent / "layouts_model"
# load_demo_model(variant) -> folder
DEMO_MODEL_DIRS: dict[str, Path] = {"default": MODEL_DIR, "layouts": LAYOUTS_MODEL_DIR}

__all__ = [
    "DEMO_MODEL_DIRS",
    "LAYOUTS",
    "LAYOUTS_MODEL_DIR",
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
