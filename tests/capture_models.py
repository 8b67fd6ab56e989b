"""Small random Qwen2 models with sharp ("peaky") attention, for the capture tests.

Random initialisation gives near-uniform attention, which hides masking and head-mapping
bugs (every wrong answer is close to the right one). Scaling q_proj and k_proj by
``sharpness`` multiplies the attention scores by ``sharpness**2``, so most rows put
> 0.9 of their weight on one key and a wrong mask or head mapping shows up as an O(1) error.
"""

from __future__ import annotations

import torch
from sharp_attention import sharpen_attention
from transformers import Qwen2Config, Qwen2ForCausalLM

from finwidget.capture.registry import _ROUTED_MODELS, _ROUTES

SHARPNESS = 24.0


def peaky_qwen2(seed: int = 0, layers: int = 3, heads: int = 4, kv_heads: int = 2, hidden: int = 64,
                sharpness: float = SHARPNESS, vocab_size: int = 128, **config) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                      pad_token_id=0, **config)
    torch.manual_seed(seed)
    return sharpen_attention(Qwen2ForCausalLM(cfg).eval(), sharpness)


def left_padded_batch(lengths=(24, 19, 13), seed: int = 1) -> dict[str, torch.Tensor]:
    """Random token ids, left-padded like EarningsTask.encode: ``[B, T]`` ids and 0/1 mask."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.zeros((len(lengths), width), dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, width - length:] = torch.randint(1, 128, (length,), generator=generator)
        attention_mask[row, width - length:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def eager_attentions(model, batch, **kwargs) -> tuple[torch.Tensor, ...]:
    """Per-layer ``[B, H, T, T]`` weights from the eager path with output_attentions (the reference)."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(**batch, output_attentions=True, **kwargs).attentions
    finally:
        model.set_attn_implementation(original)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def assert_model_clean(model, batch, reference_logits, implementation="sdpa", hooks_before=None):
    """The model is as it was: implementation, no routes, no hooks, bit-identical logits."""
    assert model.config._attn_implementation == implementation
    assert all(m.config._attn_implementation == implementation
               for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config"))
    assert id(model) not in _ROUTED_MODELS
    assert not any(route.sinks for route in _ROUTES.values())
    if hooks_before is not None:
        assert hook_count(model) == hooks_before
    assert not model.config.output_attentions
    assert torch.equal(logits(model, batch), reference_logits)
