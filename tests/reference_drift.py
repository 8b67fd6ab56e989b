"""Reference drifts measured inside the test that uses them, so no tolerance is a constant.

Two float32 evaluations of the same attention differ only by rounding, and how large
that rounding is depends on the CPU's kernels (AVX-512, AVX2 or the default build),
the thread count and the shapes. A tolerance that fits one machine fails on another,
so the tests measure the drift on the machine they run on:

- ``eager_float32_drift``: how far transformers' eager attention in float32 is from
  the same model in float64 (eager's own rounding error on this machine). Another
  float32 path of the same maths (SDPA, a recomputation) has an error of that size,
  so two float32 paths agree within ``2 x`` this drift (each is within about one drift
  of the exact value).
- ``cross_path_tolerance``: that bound, ``2 x drift``, plus two float32 ulps of 1.0 (the
  largest probability), so that near-uniform rows whose paths differ by one ulp of the
  stored value are not mistaken for a wrong result.
- ``eager_cached_attentions``: eager's own weights while ``generate`` decodes with a
  KV cache; compared with one full eager forward, that gives eager's own
  cached-decoding vs full-forward drift.

Shapes: attention per layer is ``[B, H, T, T]``; masks are ``[B, T]`` 0/1.
"""

from __future__ import annotations

import copy

import torch


def max_difference_on_real_rows(a, b, mask) -> float:
    """Largest ``|a - b|`` over layers, heads and real (unpadded) query rows.

    ``a``/``b``: sequences of ``[B, H, T, T]`` tensors (one per layer); ``mask``: ``[B, T]``.
    """
    worst = 0.0
    for layer_a, layer_b in zip(a, b, strict=True):
        for row in range(mask.shape[0]):
            real = mask[row].bool()
            gap = (layer_a[row][:, real].double() - layer_b[row][:, real].double()).abs().max()
            worst = max(worst, float(gap))
    return worst


def eager_float32_drift(model, batch, reference=None) -> float:
    """Max ``|eager float32 - eager float64|`` attention over real rows: eager's rounding here.

    ``reference``: the float32 eager attentions if already computed.
    """
    from capture_models import eager_attentions

    if reference is None:
        reference = eager_attentions(model, batch)
    exact = eager_attentions(copy.deepcopy(model).double(), batch)
    drift = max_difference_on_real_rows(reference, exact, batch["attention_mask"])
    assert drift > 0, "float32 and float64 agreeing exactly means the drift was not measured"
    return drift


def cross_path_tolerance(model, batch, reference=None) -> float:
    """Bound on ``|path A - path B|`` for two float32 evaluations of the model's attention
    probabilities: each is within eager's measured float32 drift of the exact value, and
    each rounds its stored probabilities (at most 1.0) by up to one ulp of 1.0."""
    return 2 * eager_float32_drift(model, batch, reference) + 2 * torch.finfo(torch.float32).eps


def eager_cached_attentions(model, prompt, max_new_tokens: int, pad_token_id: int = 0):
    """Greedy ``generate`` on the eager path with ``output_attentions``.

    Returns ``(sequences [B, P + n], attentions)`` where ``attentions`` holds, per layer,
    ``[B, H, T, T]`` with ``T = P + n - 1`` (the positions the model ran): the prompt's
    rows from the prefill step and one row per decoding step, each computed with the cache.
    """
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad_token_id, output_attentions=True,
                                 return_dict_in_generate=True)
    finally:
        model.set_attn_implementation(original)
    prefill, steps = out.attentions[0], out.attentions[1:]
    batch, heads, prompt_len, _ = prefill[0].shape
    total = prompt_len + len(steps)
    layers = []
    for layer, first in enumerate(prefill):
        weights = torch.zeros(batch, heads, total, total, dtype=first.dtype)
        weights[:, :, :prompt_len, :prompt_len] = first
        for step, step_weights in enumerate(steps, start=1):
            query = prompt_len + step - 1
            weights[:, :, query, : query + 1] = step_weights[layer][:, :, 0, :]
        layers.append(weights)
    return out.sequences, tuple(layers)
