"""The fine-tuned demo variant (``load_demo_model(variant="net_income_only")``): its rule,
its held-out accuracy, and the recipe (``python -m finwidget.demo.finetune``) that made it.

The recipe is ``finwidget.demo.train`` with other defaults; the full fine-tune is not run
here (a few steps of it are, twice, to check it is deterministic).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
from helpers import single_thread

from finwidget.demo import NET_INCOME_MODEL_DIR, make_statements
from finwidget.demo.finetune import FINETUNE_DEFAULTS, NET_INCOME_VARIANT
from finwidget.demo.train import VALIDATION_SEED, train, training_seed
from finwidget.errors import InputError

FRESH_SEED = 246_802  # used nowhere else: not in training, validation, the tokenizer corpus or the cards
CARD_SEED = 13_579  # the model card's held-out accuracy

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


@pytest.fixture(scope="module")
def fine_tuned():
    from finwidget import load_demo_model

    return load_demo_model(variant=NET_INCOME_VARIANT)


def test_net_income_rule_labels_by_net_income_alone():
    statements = make_statements(600, 11, rule="net_income_only")
    assert all(s.label == ("increase" if s.numbers["Net income"]["change"] > 0 else "decrease") for s in statements)
    assert all(s.rule == "net_income_only" for s in statements)
    ocf_agrees = sum((s.rule_signs[1] > 0) == (s.label == "increase") for s in statements) / len(statements)
    increases = sum(s.label == "increase" for s in statements) / len(statements)
    # the two signs are drawn independently and evenly: operating cash flow says nothing about the label
    # (600 draws: a binomial share of 1/2 lies in [0.44, 0.56] with probability > 0.996)
    assert 0.44 <= ocf_agrees <= 0.56 and 0.44 <= increases <= 0.56


def test_default_rule_is_unchanged_and_bad_rules_are_refused():
    plain, explicit = make_statements(50, 3), make_statements(50, 3, rule="both")
    assert [(s.text, s.label) for s in plain] == [(s.text, s.label) for s in explicit]
    assert all(s.rule == "both" for s in plain)
    with pytest.raises(InputError, match="rule must be one of"):
        make_statements(2, 0, rule="ocf_only")


def test_fresh_seed_is_not_a_training_seed():
    seeds = {training_seed(FINETUNE_DEFAULTS.seed, step) for step in range(FINETUNE_DEFAULTS.steps)}
    assert FRESH_SEED not in seeds and CARD_SEED not in seeds
    assert len({FRESH_SEED, CARD_SEED, VALIDATION_SEED}) == 3


def test_held_out_accuracy_on_the_new_rule(fine_tuned):
    from finwidget.demo.evaluate import evaluate

    model, tokenizer = fine_tuned
    result = evaluate(model, tokenizer, n=300, seed=FRESH_SEED, rule="net_income_only")
    assert result.accuracy >= 0.98, result
    # the rule really changed: where net income rose and operating cash flow fell, the base
    # rule says "decrease" and the fine-tuned model says "increase"
    assert result.by_pattern["NI+ OCF-"]["accuracy"] >= 0.98, result.by_pattern


def test_shipped_variant_was_made_by_the_default_command():
    from finwidget.demo.train import parse_command

    config, out, tokenizer_dir = parse_command([], defaults=FINETUNE_DEFAULTS, default_out=NET_INCOME_MODEL_DIR)
    log = json.loads((NET_INCOME_MODEL_DIR / "training_log.json").read_text())
    assert log["config"] == asdict(config)
    assert out == NET_INCOME_MODEL_DIR and tokenizer_dir is None
    assert config.init_from == "default" and config.rule == "net_income_only"
    assert log["validation"][-1]["accuracy"] == 1.0


def _tiny_finetune(**overrides):
    # the shipped model's shape (the warm start needs it); a few small steps
    config = replace(FINETUNE_DEFAULTS, steps=3, batch_size=4, validate_every=0, threads=1, **overrides)
    return train(config, log=lambda message: None)


def test_recipe_is_deterministic_from_its_seed():
    from finwidget import load_demo_model

    first, second = _tiny_finetune(), _tiny_finetune()
    assert first.losses == second.losses
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    start, _ = load_demo_model()
    moved = [name for name, weight in start.state_dict().items() if not torch.equal(weight, first.model.state_dict()[name])]
    assert moved  # it trained from the shipped model, and the weights moved
    other = _tiny_finetune(seed=FINETUNE_DEFAULTS.seed + 1)
    assert other.losses != first.losses
