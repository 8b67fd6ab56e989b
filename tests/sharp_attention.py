"""Sharpening a random model's attention, shared by the tests' model builders.

Random initialisation gives near-uniform attention, which hides masking and head-mapping
bugs. Scaling q_proj and k_proj (weights and biases) by ``factor`` multiplies every
attention score by ``factor**2``, so most rows put nearly all their weight on one key.
"""

import torch


def sharpen_attention(model, factor: float):
    """Scale every layer's q_proj and k_proj by ``factor`` in place; returns the model."""
    with torch.no_grad():
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                projection.weight.mul_(factor)
                if projection.bias is not None:
                    projection.bias.mul_(factor)
    return model
