"""The shipped demo model: loads offline, is a real Qwen2 with GQA, and knows the planted rule.

Also retrains a tiny version for a few steps to show the training command works
(the full training is not run by the tests).
"""

import json

import pytest
import torch

from finwidget.demo import MODEL_DIR, make_statement_pairs
from finwidget.demo.evaluate import HELD_OUT_SEED, evaluate
from finwidget.demo.train import VALIDATION_SEED, TrainConfig, train, training_seed

FRESH_SEED = 424_242  # used nowhere else: not in training, validation, the tokenizer corpus or the card


@pytest.fixture(scope="module")
def demo():
    from finwidget import load_demo_model

    return load_demo_model()


def test_loads_and_predicts_offline_in_a_fresh_process():
    """A fresh interpreter with the hub switched off and no proxy reachable."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    code = (
        "from finwidget import load_demo_model, predict\n"
        "from finwidget.demo import make_statements\n"
        "model, tokenizer = load_demo_model()\n"
        "s = make_statements(4, 99)\n"
        "print([p.label == t.label for p, t in zip(predict(model, tokenizer, [t.text for t in s]), s)])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[True, True, True, True]"


def test_fresh_seed_is_not_a_training_seed():
    config = TrainConfig()
    seeds_used = {training_seed(config.seed, step) for step in range(config.steps)}
    assert FRESH_SEED not in seeds_used | {VALIDATION_SEED, HELD_OUT_SEED}
    assert HELD_OUT_SEED not in seeds_used | {VALIDATION_SEED}


def test_demo_model_is_a_small_qwen2_with_grouped_query_attention(demo):
    from transformers import Qwen2ForCausalLM

    model, tokenizer = demo
    assert isinstance(model, Qwen2ForCausalLM)
    config = model.config
    assert config.num_attention_heads > config.num_key_value_heads > 0
    assert config.num_attention_heads % config.num_key_value_heads == 0
    assert config.vocab_size == len(tokenizer)
    assert config._attn_implementation != "eager"
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32


def test_saved_config_does_not_force_eager_attention():
    saved = json.loads((MODEL_DIR / "config.json").read_text())
    assert saved["model_type"] == "qwen2"
    assert "eager" not in json.dumps(saved)
    assert 512 <= saved["max_position_embeddings"] <= 32768


def test_held_out_accuracy_on_a_fresh_seed(demo):
    model, tokenizer = demo
    result = evaluate(model, tokenizer, n=300, seed=FRESH_SEED)
    assert result.accuracy >= 0.98, result
    # the model uses both rule items: it beats what either item alone would score
    assert result.accuracy > max(result.single_item_baselines.values()) + 0.1


def test_pairs_flip_the_prediction(demo):
    from finwidget.task import predict

    model, tokenizer = demo
    pairs = make_statement_pairs(60, FRESH_SEED)
    clean = predict(model, tokenizer, [p.clean.text for p in pairs], batch_size=32)
    corrupted = predict(model, tokenizer, [p.corrupted.text for p in pairs], batch_size=32)
    right = sum(c.label == p.clean.label and k.label == p.corrupted.label
                for c, k, p in zip(clean, corrupted, pairs))
    assert right / len(pairs) >= 0.95


def _tiny_config(**overrides) -> TrainConfig:
    settings = {"layers": 1, "hidden": 32, "heads": 4, "kv_heads": 2, "ffn": 64, "steps": 30, "batch_size": 8,
                "lr": 1e-2, "warmup": 5, "validate_every": 0, "threads": 1, "seed": 3, "curriculum_steps": 16}
    settings.update(overrides)
    return TrainConfig(**settings)


def test_reduced_retrain_loss_falls(tmp_path):
    from finwidget.demo.train import save
    from finwidget.loading import load_model

    config = _tiny_config()
    result = train(config, log=lambda message: None)
    first, last = result.losses[:5], result.losses[-5:]
    assert result.steps_run == 30
    assert sum(last) / 5 < 0.5 * sum(first) / 5
    assert not result.model.training

    # what the command saves loads back through the user's path and predicts the same
    save(result, config, tmp_path)
    reloaded, _ = load_model(tmp_path, device="cpu", dtype=torch.float32)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    assert json.loads((tmp_path / "training_log.json").read_text())["steps_run"] == 30


def test_training_is_deterministic_from_its_seed():
    config = _tiny_config(steps=4)
    first = train(config, log=lambda message: None)
    second = train(config, log=lambda message: None)
    assert first.losses == second.losses
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    other = train(_tiny_config(steps=4, seed=4), log=lambda message: None)
    assert other.losses != first.losses


def test_curriculum_grows_to_complete_statements():
    from finwidget.demo.train import curriculum_distractors

    config = TrainConfig()
    stages = [curriculum_distractors(config, step) for step in range(config.curriculum_steps + 1)]
    assert stages[0] == 0 and stages[-2] == 7 and stages[-1] is None
    assert stages[:-1] == sorted(stages[:-1])
    assert curriculum_distractors(TrainConfig(curriculum_steps=0), 0) is None


def test_shipped_model_was_trained_with_the_default_command():
    from dataclasses import asdict

    from finwidget.demo.train import parse_args

    config, out = parse_args([])
    log = json.loads((MODEL_DIR / "training_log.json").read_text())
    # Settings added after the shipped model was trained (layout, init_from, keep_best, rule) are not in
    # its log; their defaults (line statements, random initialisation, the planted rule) are what it was
    # trained with.
    later_settings = {"layout": "line", "init_from": "", "keep_best": False, "rule": "both"}
    assert {name: value for name, value in asdict(config).items() if name not in log["config"]} == later_settings
    assert log["config"] == {name: value for name, value in asdict(config).items() if name in log["config"]}
    assert out == MODEL_DIR
    assert log["steps_run"] >= config.curriculum_steps
