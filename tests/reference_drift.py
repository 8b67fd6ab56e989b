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
- ``row_sum_tolerance``: for sums over any set of keys of one attention row (span
  attention, shares, flows): ``2 x`` eager's measured L1 row drift (float32 vs float64,
  summed over the row's keys) plus two float32 ulps of 1.0 (a row sums to 1).
- ``eager_cached_attentions``: eager's own weights while ``generate`` decodes with a
  KV cache; compared with one full eager forward, that gives eager's own
  cached-decoding vs full-forward drift.

Shapes: attention per layer is ``[B, H, T, T]``; masks are ``[B, T]`` 0/1.
"""

from __future__ import annotations

import copy
import math

import torch
from helpers import eager_attentions


def max_difference_on_real_rows(a, b, mask) -> float:
    """Largest ``|a - b|`` over layers, heads and real (unpadded) query rows.

    ``a``/``b``: sequences of ``[B, H, T, T]`` tensors (one per layer); ``mask``: ``[B, T]``.
    """
    worst = 0.0
    for layer_a, layer_b in zip(a, b, strict=True):
        for row in range(mask.shape[0]):
            real = mask[row].bool()
            gap = float((layer_a[row][:, real].detach().double() - layer_b[row][:, real].detach().double()).abs().max())
            assert not math.isnan(gap), "NaN in an attention row"
            worst = max(worst, gap)
    return worst


def eager_float32_drift(model, batch, reference=None, exact=None) -> float:
    """Max ``|eager float32 - eager float64|`` attention over real rows: eager's rounding here.

    ``reference``: the float32 eager attentions if already computed; ``exact``: the float64 ones.
    """
    if reference is None:
        reference = eager_attentions(model, batch)
    if exact is None:
        exact = eager_float64_attentions(model, batch)
    drift = max_difference_on_real_rows(reference, exact, batch["attention_mask"])
    assert drift > 0, "float32 and float64 agreeing exactly means the drift was not measured"
    return drift


def eager_float64_attentions(model, batch) -> tuple[torch.Tensor, ...]:
    """Per-layer ``[B, H, T, T]`` float64 eager attention of a float64 copy of ``model``.

    Each row runs alone without its left padding (in float64 a padding query row has no
    finite score, becomes NaN and, times a zero weight, spreads NaN into real rows); rotary
    positions are relative, so the weights are the padded row's. Padding cells are zero.
    """
    exact_model = copy.deepcopy(model).double()
    mask = batch.get("attention_mask")
    ids = batch["input_ids"]
    mask = torch.ones_like(ids) if mask is None else mask
    layers = None
    for row in range(ids.shape[0]):
        real = mask[row].bool()
        alone = eager_attentions(exact_model, {"input_ids": ids[row][real][None]}, keep_dtype=True)
        if layers is None:
            layers = [torch.zeros(ids.shape[0], a.shape[1], ids.shape[1], ids.shape[1], dtype=torch.float64)
                      for a in alone]
        where = torch.nonzero(real).flatten()
        for layer, weights in zip(layers, alone):
            layer[row][:, where[:, None], where[None, :]] = weights[0]
    assert all(torch.isfinite(layer).all() for layer in layers)
    return tuple(layers)


def eager_row_l1_drift(model, batch, reference=None, exact=None) -> float:
    """Max over layers, heads and real query rows of ``sum_k |eager32 - eager64|`` (real keys)."""
    reference = eager_attentions(model, batch) if reference is None else reference
    exact = eager_float64_attentions(model, batch) if exact is None else exact
    mask = batch["attention_mask"]
    worst = 0.0
    for layer_32, layer_64 in zip(reference, exact, strict=True):
        for row in range(mask.shape[0]):
            real = mask[row].bool()
            gap = (layer_32[row][:, real][:, :, real].double() - layer_64[row][:, real][:, :, real]).abs()
            worst = max(worst, float(gap.sum(-1).max()))
    assert worst > 0, "float32 and float64 agreeing exactly means the drift was not measured"
    return worst


def row_sum_tolerance(model, batch, reference=None, exact=None) -> float:
    """Bound on ``|sum_S a - sum_S b|`` over any key set ``S`` of one attention row, ``a``/``b``
    from two float32 paths: each row is within eager's measured L1 drift of the exact row, and
    rounding the stored probabilities moves a row's sum by under one ulp of 1.0 each."""
    return 2 * eager_row_l1_drift(model, batch, reference, exact) + 2 * torch.finfo(torch.float32).eps


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


def float64_answer_logits(model, task, batch) -> torch.Tensor:
    """``[B, 2]`` float64 logits of the task's two answer tokens at the answer position, from a
    float64 copy of ``model``, each row run alone without its left padding (see above)."""
    exact_model = copy.deepcopy(model).double().eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows = []
    with torch.no_grad():
        for row in range(ids.shape[0]):
            alone = ids[row][mask[row].bool()][None]
            logits = exact_model(input_ids=alone).logits[0, -1]
            rows.append(logits[list(task.answer_token_ids)])
    return torch.stack(rows)


def logit_diff_tolerance(model, task, batch, measured) -> torch.Tensor:
    """``[B]`` bound on ``|a - b|`` for two float32 paths to the logit difference.

    ``measured``: ``[B]`` the logit difference from one float32 path (e.g. a plain forward).
    Its distance from the float64 value is that path's drift on this machine; the other
    path is assumed within as much, and each rounds its two logits by an ulp of their size.
    """
    exact = float64_answer_logits(model, task, batch)
    drift = (measured.double().cpu() - (exact[:, 0] - exact[:, 1])).abs()
    rounding = 2 * torch.finfo(torch.float32).eps * exact.abs().sum(dim=1)
    return 2 * drift + rounding


def float64_logits(model, input_ids, attention_mask=None) -> torch.Tensor:
    """``[B, T, vocab]`` float64 logits of a float64 copy of ``model``, each row run alone without
    its left padding (padding positions are zero)."""
    exact_model = copy.deepcopy(model).double().eval()
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    out = None
    with torch.no_grad():
        for row in range(input_ids.shape[0]):
            real = mask[row].bool()
            logits = exact_model(input_ids=input_ids[row][real][None]).logits[0]
            if out is None:
                out = torch.zeros(*input_ids.shape, logits.shape[-1], dtype=torch.float64)
            out[row, real] = logits
    return out


def logits_tolerance(measured, exact, mask=None) -> float:
    """Bound on ``|a - b|`` for two float32 paths to the same logits: twice ``measured``'s
    largest distance from the float64 ``exact`` over real positions, plus 2 ulps of the largest.

    ``measured``/``exact``: ``[B, T, vocab]`` (or ``[B, vocab]`` for one position); ``mask``: ``[B, T]``.
    """
    gap = (measured.double() - exact).abs()
    size = exact.abs()
    if mask is not None and gap.dim() == 3:
        real = mask.bool()
        gap, size = gap[real], size[real]
    return 2 * float(gap.max()) + 2 * torch.finfo(torch.float32).eps * float(size.max())
