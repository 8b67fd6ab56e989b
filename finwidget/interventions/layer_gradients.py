"""The gradient of the logit difference with respect to every head's output, one layer at a time.

Attribution patching (:mod:`~finwidget.interventions.attribution`) needs ``grad_z LD``
for every layer's head outputs ``z`` (the ``o_proj`` input, ``[T, H*D]``). A plain
backward pass keeps every layer's activations at once (eager attention: ``H x T x T``
probabilities per layer, 3 GB for 28 layers x 28 heads at 1,000 tokens). Here the clean
run's cached residual stream (:class:`~finwidget.interventions.cached_run.CachedRun`)
lets the backward pass go one layer at a time, top down: layer ``l`` is re-run from its
cached input with gradients on, and the gradient reaching its output from layer ``l+1``
is pulled back to its input and its head outputs. One layer's activations live at a
time; the work is one forward and one backward pass, as for the plain way. The
weights' ``.grad`` are not touched; ``should_stop()`` is polled between layers.

What is kept per layer is what first-order estimates of the explorer's modes need
(:class:`HeadGradientSums`), not the gradients themselves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from finwidget.errors import InputError
from finwidget.interventions.cancel import RunCancelled
from finwidget.model_parts import (
    decoder_stack,
    final_norm,
    hook_head_outputs,
    remove_hooks,
    rotary_embedding,
    unembedding,
)
from finwidget.task import eval_mode


@dataclass
class HeadGradientSums:
    """Per layer, sums over the statement's tokens ``t`` of one statement (batch row 0):

    gradient_dot_output: ``[L, H*D]`` float64, ``sum_t g[t] * z[t]`` per feature;
    gradient_sum: ``[L, H*D]`` float64, ``sum_t g[t]`` per feature;

    where ``z`` is a layer's head outputs (``o_proj`` input) in the clean run and ``g`` the
    gradient of the logit difference with respect to them. For a replacement that is
    affine per feature, ``z' = a * z + b``, the first-order change of the logit difference
    is ``sum_f (a_f - 1) * gradient_dot_output[f] + b_f * gradient_sum[f]`` over the
    head's features ``f``. clean_logit_diff: the clean run's logit difference.
    """

    gradient_dot_output: torch.Tensor
    gradient_sum: torch.Tensor
    clean_logit_diff: float
    num_heads: int
    head_dim: int

    def head_slice(self, head: int) -> slice:
        return slice(head * self.head_dim, (head + 1) * self.head_dim)


def _layer_call(cached, hidden: torch.Tensor):
    """``layer(index, hidden) -> hidden``: a decoder layer called as ``CachedRun.resume`` calls it."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    model = cached.model
    config = decoder_stack(model).config
    length = hidden.shape[1]
    position_ids = torch.arange(length, device=hidden.device).unsqueeze(0)
    mask_kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": cached.batch["attention_mask"],
                   "cache": None, "position_ids": position_ids}
    masks = {"full_attention": create_causal_mask(**mask_kwargs)}
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * cached.geometry.num_layers
    if "sliding_attention" in layer_types:
        masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
    with torch.no_grad():
        position_embeddings = rotary_embedding(model)(hidden, position_ids)

    def call(index: int, x: torch.Tensor) -> torch.Tensor:
        out = cached._layers[index](x, attention_mask=masks[layer_types[index]],
                                    position_embeddings=position_embeddings, position_ids=position_ids,
                                    cache=None, use_cache=False)
        return out[0] if isinstance(out, tuple) else out

    return call


def head_gradient_sums(cached, should_stop=None, state: dict | None = None) -> HeadGradientSums:
    """:class:`HeadGradientSums` of the first statement of a :class:`CachedRun`'s batch,
    by a layer-by-layer backward pass from its cached residual stream (see the module).

    Raises :class:`RunCancelled` when ``should_stop()`` turns true (checked between layers);
    every hook is removed on every exit. ``state``: a dict the pass keeps its progress in
    (the layers done so far); pass the same dict again after a cancel to resume there.
    """
    if cached.batch_size != 1:
        raise InputError(f"head_gradient_sums reads one statement; the cached run has {cached.batch_size}")
    geometry = cached.geometry
    model = cached.model
    num_layers = geometry.num_layers
    width = geometry.num_heads * geometry.head_dim
    state = {} if state is None else state
    if not state:
        state.update(layer=num_layers - 1, upstream=None,
                     dot=torch.zeros((num_layers, width), dtype=torch.float64),
                     total=torch.zeros((num_layers, width), dtype=torch.float64))
    dot, total = state["dot"], state["total"]
    kept: dict[int, torch.Tensor] = {}
    owner = threading.get_ident()

    def keeper(layer):
        def hook(module, args):
            if threading.get_ident() == owner:  # not a forward another thread runs meanwhile
                kept[layer] = args[0]
        return hook

    handles = hook_head_outputs(model, range(num_layers), keeper)
    try:
        with eval_mode(model), torch.enable_grad():
            call = _layer_call(cached, cached.residuals[0])
            upstream = state["upstream"]  # gradient of LD with respect to the output of the current layer
            for layer in range(state["layer"], -1, -1):
                if should_stop is not None and should_stop():
                    raise RunCancelled("the gradient pass was cancelled")
                kept.clear()
                x = cached.residuals[layer].detach().clone().requires_grad_(True)
                out = call(layer, x)
                z = kept[layer]
                if upstream is None:  # the top layer: read the logit difference at the answer position
                    logits = unembedding(model)(final_norm(model)(out[:, -1:, :]))[:, -1, :]
                    logit_diff = cached.task.logit_diff(logits).sum()
                    grad_x, grad_z = torch.autograd.grad(logit_diff, [x, z])
                else:
                    grad_x, grad_z = torch.autograd.grad(out, [x, z], grad_outputs=upstream)
                g = grad_z[0].double()                                               # [T, H*D]
                dot[layer] = (g * z.detach()[0].double()).sum(0).cpu()
                total[layer] = g.sum(0).cpu()
                upstream = grad_x.detach()
                state.update(layer=layer - 1, upstream=upstream)
                del out, z, grad_z, x
    finally:
        remove_hooks(handles)
    return HeadGradientSums(dot, total, float(cached.clean_logit_diff[0]), geometry.num_heads, geometry.head_dim)


def affine_form(mode, value, recorded: torch.Tensor | None, width: int):
    """``(a, b)`` ``[width]`` float64 with ``mode.replace(z) == a * z + b`` per feature, or None
    when the mode's replacement is not affine per feature independent of the position
    (then a first-order estimate from :class:`HeadGradientSums` is not possible).

    ``recorded``: what the mode reads (e.g. the reference mean ``[width]``), or None.
    """
    if mode.needs_source or (recorded is not None and recorded.dim() != 1):
        return None
    zeros = torch.zeros(width, dtype=torch.float64)
    rec = None if recorded is None else recorded.double().cpu()
    b = torch.as_tensor(mode.replace(zeros, value, rec), dtype=torch.float64).expand(width)
    a = torch.as_tensor(mode.replace(zeros + 1.0, value, rec), dtype=torch.float64).expand(width) - b
    at_two = torch.as_tensor(mode.replace(zeros + 2.0, value, rec), dtype=torch.float64).expand(width)
    if not torch.allclose(at_two, 2.0 * a + b, rtol=1e-12, atol=1e-12):
        return None
    return a, b
