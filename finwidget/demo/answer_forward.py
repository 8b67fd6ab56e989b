"""A Qwen2 forward pass that computes only what the answer token needs (for training).

The training loss of the demo model looks at one position: the answer position,
the last column of a left-padded batch. Every layer but the last must still run at
every position (later positions attend to them), but the last layer only matters
at the answer position: its keys and values are needed at every position, its
query, attention output and MLP only at the last one. For a 2-layer model this
roughly halves the work of a training step.

``answer_position_logits`` gives the same numbers as
``model(input_ids, attention_mask=..., logits_to_keep=1).logits[:, -1]`` (tested to
float rounding); it uses the model's own modules and weights, so gradients flow to
the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from finwidget.model_parts import decoder_layers, embed_tokens, final_norm, rotary_embedding, unembedding


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` [B, heads, T, d] rotated by ``cos``/``sin`` [B, T, d] (RoPE, rotate-half layout)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + _rotate_half(x) * sin


def _last_layer_at_answer(layer, hidden: torch.Tensor, position_embeddings, attention_mask) -> torch.Tensor:
    """Run decoder ``layer`` for the last position only.

    hidden: [B, T, D] input of the layer at every position.
    attention_mask: [B, T] 0/1 padding mask or None.
    Returns [B, 1, D]: the layer's output at the last position.
    """
    attn = layer.self_attn
    batch, length, _ = hidden.shape
    head_dim = attn.head_dim
    normed = layer.input_layernorm(hidden)                                           # [B, T, D]
    query = attn.q_proj(normed[:, -1:]).view(batch, 1, -1, head_dim).transpose(1, 2)  # [B, H, 1, d]
    key = attn.k_proj(normed).view(batch, length, -1, head_dim).transpose(1, 2)       # [B, Hkv, T, d]
    value = attn.v_proj(normed).view(batch, length, -1, head_dim).transpose(1, 2)     # [B, Hkv, T, d]
    cos, sin = position_embeddings                                                    # [B or 1, T, d]
    query = _apply_rope(query, cos[:, -1:], sin[:, -1:])
    key = _apply_rope(key, cos, sin)
    groups = query.shape[1] // key.shape[1]  # query head h reads KV head h // groups
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    key_mask = None
    if attention_mask is not None:
        key_mask = attention_mask.bool()[:, None, None, :]                            # [B, 1, 1, T]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, scale=attn.scaling)
    out = attn.o_proj(out.transpose(1, 2).reshape(batch, 1, -1))                      # [B, 1, D]
    last = hidden[:, -1:] + out
    return last + layer.mlp(layer.post_attention_layernorm(last))


def answer_position_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, vocab]`` float logits at the last position of a left-padded batch.

    Args:
        model: a ``Qwen2ForCausalLM`` (or a model with the same module layout).
        input_ids: [B, T] long.
        attention_mask: [B, T] long 0/1 (1 = real token), or None.
    """
    from transformers.masking_utils import create_causal_mask

    hidden = embed_tokens(model)(input_ids)
    position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    position_embeddings = rotary_embedding(model)(hidden, position_ids)
    layers = list(decoder_layers(model))
    if len(layers) > 1:
        mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  cache=None, position_ids=position_ids)
        for layer in layers[:-1]:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                           position_embeddings=position_embeddings)
    last = _last_layer_at_answer(layers[-1], hidden, position_embeddings, attention_mask)
    return unembedding(model)(final_norm(model)(last))[:, -1, :]
