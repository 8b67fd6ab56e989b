"""Two exact shortcuts through a pre-norm decoder layer (Qwen2, Llama, Mistral).

A re-run that only needs the answer position's logits can skip work a full forward does:

- The layer where a head intervention happens: its attention output before ``o_proj``
  (the concatenated head outputs) does not depend on the intervention, so the re-run
  starts from the clean run's ``o_proj`` input, skipping the layer's Q/K/V projections
  and attention: ``h = residual + o_proj(z); h = h + mlp(post_norm(h))``.
- The last layer: only the answer position's output reaches the logits, so keys and
  values are computed for every position but queries, ``o_proj``, and the MLP for the
  last position only.

Both compute the same operations on the same numbers as the full layer (tests compare
them with a full forward). They apply only to the layer classes listed in
``STANDARD_LAYERS`` whose submodules run on the device of the layer's input and are
not managed by accelerate hooks; anything else runs the whole layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STANDARD_LAYERS = ("Qwen2DecoderLayer", "LlamaDecoderLayer", "MistralDecoderLayer")
SHORTCUT_ATTENTION = ("sdpa", "eager")


def supports_shortcuts(layer, attn_implementation: str | None) -> bool:
    """Whether ``layer`` is a plain pre-norm layer these shortcuts reproduce exactly."""
    if type(layer).__name__ not in STANDARD_LAYERS or attn_implementation not in SHORTCUT_ATTENTION:
        return False
    attention = getattr(layer, "self_attn", None)
    needed = ("q_proj", "k_proj", "v_proj", "o_proj", "scaling", "head_dim")
    if attention is None or not all(hasattr(attention, name) for name in needed):
        return False
    if hasattr(attention, "q_norm") or hasattr(attention, "k_norm"):
        return False
    return not any(hasattr(module, "_hf_hook") for module in layer.modules())


def continue_from_attention_output(layer, residual: torch.Tensor, head_outputs: torch.Tensor) -> torch.Tensor:
    """The layer's output from its input ``residual`` ``[R, T, D]`` and its clean ``o_proj``
    input ``head_outputs`` ``[R, T, H*d]`` (hooks on ``o_proj`` fire, so interventions apply)."""
    hidden = residual + layer.self_attn.o_proj(head_outputs)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def last_position_output(layer, hidden: torch.Tensor, attention_mask, position_embeddings) -> torch.Tensor:
    """The layer's output ``[R, 1, D]`` at the last position, from its input ``hidden`` ``[R, T, D]``.

    ``attention_mask``: the 4D mask the model built for this layer (bool: True attends;
    float: added to the scores) or None (plain causal: the last query sees every key).
    """
    attention = layer.self_attn
    rows, length, _ = hidden.shape
    d = attention.head_dim
    normed = layer.input_layernorm(hidden)
    keys = attention.k_proj(normed).view(rows, length, -1, d).transpose(1, 2)  # [R, Hkv, T, d]
    values = attention.v_proj(normed).view(rows, length, -1, d).transpose(1, 2)
    query = attention.q_proj(normed[:, -1:]).view(rows, 1, -1, d).transpose(1, 2)  # [R, H, 1, d]
    cos, sin = position_embeddings  # [1 or R, T, d]
    cos_q, sin_q = cos[:, -1:].unsqueeze(1), sin[:, -1:].unsqueeze(1)
    query = query * cos_q + _rotate_half(query) * sin_q
    keys = keys * cos.unsqueeze(1) + _rotate_half(keys) * sin.unsqueeze(1)
    groups = query.shape[1] // keys.shape[1]
    if groups > 1:
        keys = keys.repeat_interleave(groups, dim=1)
        values = values.repeat_interleave(groups, dim=1)
    mask = None
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, :length]
    output = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=attention.scaling)
    output = output.transpose(1, 2).reshape(rows, 1, -1)  # [R, 1, H*d]
    out = hidden[:, -1:] + attention.o_proj(output)
    return out + layer.mlp(layer.post_attention_layernorm(out))
