"""Small models for the analysis tests, built from configs (no downloads).

``peaky_qwen2`` is a random Qwen2-shaped model whose query/key projections are
scaled up so attention patterns are sharp: near-uniform random attention would hide
indexing bugs (a wrong key column or head still "looks right").
"""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def qwen2_config(vocab_size: int, layers: int = 3, heads: int = 4, kv_heads: int = 2, head_dim: int = 16,
                 **extra) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=heads * head_dim,
        intermediate_size=4 * heads * head_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        **extra,
    )


def peaky_qwen2(vocab_size: int, seed: int = 0, sharpness: float = 20.0, **geometry) -> Qwen2ForCausalLM:
    """A random Qwen2 in eval mode (float32, SDPA) with sharpened attention."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(vocab_size, **geometry)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(sharpness)
            layer.self_attn.k_proj.weight.mul_(sharpness)
            # non-zero biases everywhere they exist, so a missed bias term shows up
            layer.self_attn.q_proj.bias.normal_(0.0, 0.5)
            layer.self_attn.k_proj.bias.normal_(0.0, 0.5)
            layer.self_attn.v_proj.bias.normal_(0.0, 0.5)
            layer.input_layernorm.weight.normal_(1.0, 0.2)
            layer.post_attention_layernorm.weight.normal_(1.0, 0.2)
        model.model.norm.weight.normal_(1.0, 0.2)
    return model


def eager_attentions(model, batch) -> tuple[torch.Tensor, ...]:
    """``output_attentions`` from the eager path: one ``[B, H, T, T]`` float32 tensor per layer.
    The model's attention implementation is restored afterwards."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(**batch, output_attentions=True)
    finally:
        model.set_attn_implementation(original)
    return tuple(a.float() for a in out.attentions)
