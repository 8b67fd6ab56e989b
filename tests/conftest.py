"""Shared test fixtures: the small models and tokenizers every test builds, in one place.

Models are random Qwen2s built from configs (no downloads) with sharpened attention:
random initialisation gives near-uniform attention, which hides masking, indexing and
head-mapping bugs (every wrong answer is close to the right one). Scaling ``q_proj`` and
``k_proj`` by ``sharpness`` multiplies every attention score by ``sharpness**2``, so most
rows put nearly all their weight on one key and a wrong mask, slice or head mapping
shows up as an O(1) error.

Fixtures (session-scoped; the builders are functions, the tokenizers objects):

- ``peaky_qwen2(vocab_size=128, seed=0, **options)``: the one model builder;
- ``analysis_qwen2(vocab_size, seed=0, **geometry)``: the same with the analysis tests'
  settings (head size 16, a wider MLP, noisy biases and norm gains, so a missed bias or
  gain term shows up);
- ``qwen2_config(vocab_size, layers, heads, kv_heads, head_dim)``: a plain config;
- ``qwen_like_tokenizer``: transformers' ``Qwen2Tokenizer`` with a small byte-level BPE
  vocabulary trained here (Qwen2's pre-tokenizer: every digit its own token);
- ``word_tokenizer``: a word-level tokenizer over the intervention tests' statements
  (:func:`helpers.statement`)
  (Qwen2's pre-tokenizer, " increase" / " decrease" single tokens);
- ``tiny_setup(seed=0, **options) -> (model, tokenizer, task)``: the intervention tests'
  model on ``word_tokenizer``.

To add a tokenizer (e.g. a real Qwen2 one), add one session fixture here.
"""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
import torch
from helpers import sharpen_attention, statement

# ---------------------------------------------------------------------------- models


def build_qwen2(vocab_size: int = 128, seed: int = 0, *, layers: int = 3, heads: int = 4, kv_heads: int = 2,
                hidden: int = 64, sharpness: float = 24.0, mlp_ratio: int = 2, max_positions: int = 512,
                pad_token_id: int | None = 0, noisy_weights: bool = False, attn_implementation: str | None = None,
                **config):
    """A random Qwen2 (eval mode, float32) with sharpened attention.

    ``noisy_weights`` redraws the q/k/v biases and the norm gains (non-zero and non-one
    everywhere they exist). ``config`` goes to ``Qwen2Config`` (e.g. ``pad_token_id``,
    ``sliding_window``).
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=mlp_ratio * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max_positions, pad_token_id=pad_token_id, **config)
    if attn_implementation is not None:
        cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = sharpen_attention(Qwen2ForCausalLM(cfg).eval(), sharpness)
    if noisy_weights:
        with torch.no_grad():
            for layer in model.model.layers:
                for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    projection.bias.normal_(0.0, 0.5)
                layer.input_layernorm.weight.normal_(1.0, 0.2)
                layer.post_attention_layernorm.weight.normal_(1.0, 0.2)
            model.model.norm.weight.normal_(1.0, 0.2)
    return model


def build_qwen2_config(vocab_size: int, layers: int = 3, heads: int = 4, kv_heads: int = 2, head_dim: int = 16,
                       **extra):
    """A Qwen2 config of the given geometry (hidden size ``heads * head_dim``)."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab_size, hidden_size=heads * head_dim, intermediate_size=4 * heads * head_dim,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=1024, tie_word_embeddings=False, **extra)


def build_analysis_qwen2(vocab_size: int, seed: int = 0, sharpness: float = 20.0, heads: int = 4,
                         head_dim: int = 16, **geometry):
    return build_qwen2(vocab_size, seed, heads=heads, hidden=heads * head_dim, sharpness=sharpness, mlp_ratio=4,
                       max_positions=1024, pad_token_id=None, noisy_weights=True, tie_word_embeddings=False,
                       **geometry)


@pytest.fixture(scope="session")
def peaky_qwen2():
    return build_qwen2


@pytest.fixture(scope="session")
def analysis_qwen2():
    return build_analysis_qwen2


@pytest.fixture(scope="session")
def qwen2_config():
    return build_qwen2_config


# ---------------------------------------------------------------------------- tokenizers

TRAINING_TEXT = [
    "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370",
    "Operating cash flow: change +2,210 | 2022: 9,876 | 2021: 7,666",
    "Revenue: change 5,012 | 2022: 120,456 | 2021: 115,444",
    "Total liabilities and equity 45,000 40,000",
    "Total assets, Total current assets, Accounts receivable, Inventory, Goodwill",
    "Diluted earnings per share $ (2.15) $ 1.73",
    "(in millions, except per share data) Fiscal year ended December 31, 2023 2022",
    "Revenue grew 12.5% to $(1,234.5) million in 2023 <script>alert('x')</script>",
    "Gross margin ratio, return on equity, capital expenditures, dividends paid",
    "Question: Will earnings increase or decrease next year?\nAnswer: increase",
    "Answer: decrease",
]


@lru_cache(maxsize=1)
def build_qwen_like_tokenizer(vocab_size: int = 420):
    """A ``Qwen2Tokenizer`` (fast) with a small byte-level BPE vocabulary trained on TRAINING_TEXT."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    trainer_model = Tokenizer(models.BPE())
    trainer_model.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        show_progress=False,
    )
    trainer_model.train_from_iterator(TRAINING_TEXT * 20, trainer)
    state = json.loads(trainer_model.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


QWEN2_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
def build_word_tokenizer():
    """A word-level tokenizer over the statements :func:`statement` writes."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from finwidget.task import DEFAULT_QUESTION

    splitter = pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated")
    corpus = [statement(s) for s in range(50)] + [f"{DEFAULT_QUESTION}\nAnswer:", " increase", " decrease",
                                                   "0123456789", " -", " +", " |", ",", "\n", ": ", "The"]
    pieces = sorted({piece for text in corpus for piece, _ in splitter.pre_tokenize_str(text)})
    vocab = {"<unk>": 0, "<pad>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = splitter
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<pad>")


def build_tiny_setup(seed: int = 0, layers: int = 4, sharpness: float = 12.0, **model_options):
    """``(model, tokenizer, task)``: a grouped-query Qwen2 on :func:`build_word_tokenizer`."""
    from finwidget.task import EarningsTask

    tokenizer = build_word_tokenizer()
    model = build_qwen2(len(tokenizer), seed, layers=layers, sharpness=sharpness, pad_token_id=1, eos_token_id=1,
                        bos_token_id=None, attn_implementation="sdpa", **model_options)
    model.generation_config.pad_token_id = 1
    return model, tokenizer, EarningsTask(tokenizer)


@pytest.fixture(scope="session")
def qwen_like_tokenizer():
    return build_qwen_like_tokenizer()


@pytest.fixture(scope="session")
def word_tokenizer():
    return build_word_tokenizer()


@pytest.fixture(scope="session")
def tiny_setup():
    return build_tiny_setup


# ------------------------------------------------------------------ the shipped demo model
@pytest.fixture(scope="module")
def demo():
    """``(model, tokenizer, EarningsTask)`` of the shipped demo model, loaded once per module
    (a module that defines its own ``demo`` fixture keeps it)."""
    from finwidget.demo import load_demo_model
    from finwidget.task import EarningsTask

    model, tokenizer = load_demo_model()
    return model, tokenizer, EarningsTask(tokenizer)


@pytest.fixture(scope="module")
def text():
    """One demo statement's text (seed 3)."""
    from finwidget.demo import make_statements

    return make_statements(1, seed=3)[0].text
