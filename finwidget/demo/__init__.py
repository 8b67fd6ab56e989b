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


def load_demo_model(device: str = "cpu"):
    """The shipped demo model and its tokenizer (offline, float32, CPU by default).

    A small Qwen2 trained on synthetic statements with a planted, documented rule;
    see ``finwidget/demo/model/MODEL_CARD.md``. ``device`` is checked like
    ``load_model``'s (``"cpu"``, ``"cuda"``, ``"auto"``, ...).
    """
    import torch

    from finwidget.errors import ModelLoadError
    from finwidget.loading import load_model

    if not (MODEL_DIR / "model.safetensors").is_file():
        raise ModelLoadError(
            f"the demo model's weights are missing from {MODEL_DIR}; reinstall finwidget or "
            "rebuild them with `python -m finwidget.demo.train`"
        )
    return load_model(MODEL_DIR, device=device, dtype=torch.float32)

__all__ = [
    "LINE_ITEMS",
    "MODEL_DIR",
    "RULE",
    "RULE_ITEMS",
    "Statement",
    "StatementPair",
    "label_for",
    "load_demo_model",
    "make_statement_pairs",
    "make_statements",
]
