"""Fine-tune the demo model so that its rule changes: net income alone decides.

    python -m finwidget.demo.finetune --out DIR         # the shipped variant: --out finwidget/demo/net_income_model
    python -m finwidget.demo.finetune --steps 20 --out /tmp/try

Starts from the shipped demo model (``load_demo_model()``, rule "net income AND operating
cash flow rise") and trains it on statements labelled by the new rule
(``make_statements(rule="net_income_only")``: increase iff the change in net income is
positive; operating cash flow's sign is drawn independently, so it becomes a distractor).
It is ``finwidget.demo.train`` with other defaults (``FINETUNE_DEFAULTS``): every setting
of that command is a flag here too, the training loop, the answer-only loss, the
validation and the saved files are the same code. Deterministic from ``--seed`` like
training: the same command on the same machine gives bit-identical weights.

Seeds: training batches ``1_000_000 * (seed + 1) + step`` with seed 1 (2,000,000 ...),
validation ``VALIDATION_SEED`` (777) under the new rule. The model card's held-out
accuracy uses seed 13579, its test seed 246802, the comparison test seed 97531: none of these.
"""

from __future__ import annotations

from finwidget.demo.train import TrainConfig
from finwidget.demo.train import main as train_main

NET_INCOME_VARIANT = "net_income_only"  # load_demo_model(variant=...)

FINETUNE_DEFAULTS = TrainConfig(
    rule="net_income_only",
    init_from="default",  # the shipped demo model
    curriculum_steps=0,  # complete statements from the first step: the model already reads them
    steps=300,
    lr=1e-3,
    warmup=20,
    seed=1,
    validate_every=50,
    min_steps=100,
    stop_at_accuracy=1.0,
)


def main(argv=None) -> None:
    """``python -m finwidget.demo.finetune``: ``finwidget.demo.train``'s command with
    ``FINETUNE_DEFAULTS`` and the fine-tuned variant's folder as the default ``--out``."""
    from finwidget.demo import NET_INCOME_MODEL_DIR

    train_main(argv, defaults=FINETUNE_DEFAULTS, default_out=NET_INCOME_MODEL_DIR,
               description="Fine-tune the finwidget demo model so that net income alone decides.")


if __name__ == "__main__":
    main()
