"""Loading models: real loading code exercised on folders the tests build.

No hub is reachable here, so every model is a random Qwen2 saved to a temporary
folder next to the demo tokenizer, or the shipped demo model.
"""

import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, ViTConfig

from finwidget import load_demo_model, load_model
from finwidget.demo import MODEL_DIR
from finwidget.errors import ModelLoadError


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("random-qwen2")
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_load_model_from_folder_keeps_sdpa_and_float32_on_cpu(qwen2_folder):
    model, tokenizer = load_model(qwen2_folder, device="cpu")
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert not model.training
    ids = tokenizer("Net income: change -1,433", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)


def test_load_model_honours_dtype(qwen2_folder):
    model, _ = load_model(qwen2_folder, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_missing_folder_names_the_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model.*does not exist"):
        load_model(str(missing))


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_unreachable_hub_id_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model("finwidget-tests/definitely-not-a-model")
    message = str(info.value)
    assert "finwidget-tests/definitely-not-a-model" in message and "Fix:" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_non_causal_model_is_refused(tmp_path):
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'vit'.*not a causal language model"):
        load_model(tmp_path)


def test_unknown_dtype_is_refused(qwen2_folder):
    with pytest.raises(ModelLoadError, match="unknown dtype 'float13'"):
        load_model(qwen2_folder, device="cpu", dtype="float13")


def test_load_demo_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_demo_model()
    assert model.config.model_type == "qwen2"
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # real GQA
    assert tokenizer.encode(" increase", add_special_tokens=False).__len__() == 1
