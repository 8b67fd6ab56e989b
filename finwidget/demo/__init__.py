"""The offline demo: synthetic statements with a planted rule, and a small Qwen2 trained on them.

- ``make_statements(n, seed)`` / ``make_statement_pairs(n, seed)``: the statement generator
  (``finwidget.demo.statements``), the rule in ``RULE``.
- ``MODEL_DIR``: the folder of the shipped model (weights, config, tokenizer, ``MODEL_CARD.md``);
  load it with ``finwidget.load_demo_model()``.
- ``LAYOUTS_MODEL_DIR``: a second demo model, trained on the same rule written in three
  layouts (line, markdown table, aligned text table; ``make_statements(layout=...)``);
  load it with ``finwidget.load_demo_model(variant="layouts")``.
- ``NET_INCOME_MODEL_DIR``: the shipped model fine-tuned so that net income alone decides
  (``make_statements(rule="net_income_only")``; recipe ``python -m finwidget.demo.finetune``);
  load it with ``finwidget.load_demo_model(variant="net_income_only")``.
- ``python -m finwidget.demo.train`` rebuilds the model, ``python -m finwidget.demo.evaluate``
  measures its held-out accuracy.
"""

from pathlib import Path

from finwidget.demo.statements import (
    LAYOUTS,
    LINE_ITEMS,
    RULE,
    RULE_ITEMS,
    RULES,
    Statement,
    StatementPair,
    label_for,
    make_statement_pairs,
    make_statements,
)

MODEL_DIR: Path = Path(__file__).resolve().parent / "model"
LAYOUTS_MODEL_DIR: Path = Path(__file__).resolve().parent / "layouts_model"
NET_INCOME_MODEL_DIR: Path = Path(__file__).resolve().parent / "net_income_model"
# load_demo_model(variant) -> folder
DEMO_MODEL_DIRS: dict[str, Path] = {"default": MODEL_DIR, "layouts": LAYOUTS_MODEL_DIR,
                                    "net_income_only": NET_INCOME_MODEL_DIR}
# variant -> the command that rebuilds its weights (each model card gives the details)
REBUILD_COMMANDS: dict[str, str] = {
    "default": "python -m finwidget.demo.train",
    "layouts": "python -m finwidget.demo.train --layout mixed ...",  # every flag is in its model card
    "net_income_only": "python -m finwidget.demo.finetune",
}


def load_demo_model(device: str = "cpu", variant: str = "default"):
    """A shipped demo model and its tokenizer (offline, float32, CPU by default).

    A small Qwen2 trained on synthetic statements with a planted, documented rule.
    ``device`` is checked like ``load_model``'s (``"cpu"``, ``"cuda"``, ``"auto"``, ...).

    ``variant``: ``"default"``, the demo model that reads one statement layout (see
    ``finwidget/demo/model/MODEL_CARD.md``); ``"layouts"``, a second model trained on the
    same rule written as lines, markdown tables and aligned text tables
    (``make_statements(layout=...)``; see ``finwidget/demo/layouts_model/MODEL_CARD.md``).
    ``"net_income_only"``, the default model fine-tuned so that net income alone decides
    (increase iff its change is positive; ``make_statements(rule="net_income_only")``; see
    ``finwidget/demo/net_income_model/MODEL_CARD.md``).

    Raises:
        ModelLoadError: an unknown variant, or the variant's weights are missing.
    """
    import torch

    from finwidget.errors import ModelLoadError
    from finwidget.loading import load_model

    if not isinstance(variant, str) or variant not in DEMO_MODEL_DIRS:
        raise ModelLoadError(f"unknown demo model variant {variant!r}; use one of {sorted(DEMO_MODEL_DIRS)}")
    folder = DEMO_MODEL_DIRS[variant]
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(
            f"the demo model's weights are missing from {folder}; reinstall finwidget or "
            f"rebuild them with `{REBUILD_COMMANDS[variant]}` (see the model card in that folder)"
        )
    return load_model(folder, device=device, dtype=torch.float32)


__all__ = [
    "DEMO_MODEL_DIRS",
    "LAYOUTS",
    "LAYOUTS_MODEL_DIR",
    "LINE_ITEMS",
    "MODEL_DIR",
    "NET_INCOME_MODEL_DIR",
    "RULE",
    "RULES",
    "RULE_ITEMS",
    "Statement",
    "StatementPair",
    "label_for",
    "load_demo_model",
    "make_statement_pairs",
    "make_statements",
]
