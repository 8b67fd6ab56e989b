"""A tiny random Qwen2 with sharp attention and a word-level tokenizer, for the intervention tests.

Random initialisation gives near-uniform attention that hides bugs (every wrong answer
is close to the right one); scaling q_proj/k_proj makes attention peaky so a wrong
slice, mask or position shows up as an O(1) error. The tokenizer splits text like
Qwen2 (one token per digit, the space before a number its own token) over a
vocabulary built from the test statements, and " increase"/" decrease" are single tokens.
"""

from __future__ import annotations

import random

import torch
from sharp_attention import sharpen_attention
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from finwidget.task import DEFAULT_QUESTION, EarningsTask

QWEN2_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
ITEMS = ("Revenue", "Net income", "Operating cash flow", "Total assets", "Gross margin")


def statement(seed: int, lines: int | None = None) -> str:
    """A small statement: ``lines`` line items with a signed change and two years."""
    rng = random.Random(seed)
    count = lines if lines is not None else rng.randint(2, 4)
    rows = []
    for item in rng.sample(ITEMS, count):
        previous = rng.randint(10, 9999)
        change = rng.randint(-previous + 1, 2000)
        rows.append(f"{item}: change {change:+,} | {previous + change:,} | {previous:,}")
    return "\n".join(rows)


def word_tokenizer() -> PreTrainedTokenizerFast:
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


def peaky_qwen2(vocab_size: int, seed: int = 0, layers: int = 4, heads: int = 4, kv_heads: int = 2,
                hidden: int = 64, sharpness: float = 12.0, **config) -> Qwen2ForCausalLM:
    """A random Qwen2 (grouped-query attention) whose attention is sharp."""
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=512, pad_token_id=1, eos_token_id=1, bos_token_id=None, **config)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = sharpen_attention(Qwen2ForCausalLM(cfg).eval(), sharpness)
    model.generation_config.pad_token_id = 1
    return model


def tiny_setup(seed: int = 0, **model_options):
    """``(model, tokenizer, task)``."""
    tokenizer = word_tokenizer()
    model = peaky_qwen2(len(tokenizer), seed=seed, **model_options)
    return model, tokenizer, EarningsTask(tokenizer)


def registered_hooks(model) -> int:
    """How many forward/backward hooks are registered on any module of ``model``."""
    total = 0
    for module in model.modules():
        for name in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            total += len(getattr(module, name, {}) or {})
    return total


def full_forward_logit_diff(model, task, batch) -> torch.Tensor:
    """The task's logit difference from a plain full forward (all positions' logits)."""
    with torch.inference_mode():
        logits = model(**batch).logits
    return task.logit_diff(logits[:, -1, :]).float()


def same_shape_statement(text: str, seed: int) -> str:
    """``text`` with every digit and sign redrawn: different numbers, the same tokens count."""
    rng = random.Random(seed)
    out = []
    for char in text:
        if char.isdigit():
            out.append(str(rng.randint(1, 9)))
        elif char in "+-":
            out.append(rng.choice("+-"))
        else:
            out.append(char)
    return "".join(out)


def single_thread():
    """Fixture body: run a test module with one torch thread, then restore the setting.

    The models here are tiny; on a CPU shared with other jobs, a second thread mostly
    spins waiting (measured: 3-8x more CPU time for the same work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
