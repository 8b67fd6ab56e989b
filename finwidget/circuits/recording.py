"""One forward and one backward pass that give every head's input channels their gradient.

For the answer's logit difference ``M`` of a clean run, :func:`record_channel_gradients`
keeps, per layer ``l`` (shape letters: :mod:`finwidget.model_parts`):

- ``residuals[l]`` ``[B, T, E]``: the residual stream entering layer ``l`` (what its
  attention input norm reads);
- ``head_outputs[l]`` ``[B, T, H*D]`` and ``head_output_gradients[l]``: every head's output
  (the ``o_proj`` input) and ``dM/d(output)``;
- ``channel_gradients[l]`` ``[3, B, H, T, D]``: for each query head ``r`` and channel ``q``,
  ``k``, ``v``, the gradient of ``M`` with respect to the projection that head ``r`` reads,
  before the rotary embedding. With grouped-query attention the key and value of KV head
  ``g`` are shared by the query heads ``g*H/Hkv .. (g+1)*H/Hkv - 1``; here they are split
  per query head: the ``k``/``v`` gradient of head ``r`` is the part of the shared
  projection's gradient that flows through head ``r``'s attention (the key and value are
  repeated per query head inside the attention function, which keeps each copy's
  gradient; the copies of one group sum to the shared projection's gradient);
- ``values[l]`` ``[B, H, T, D]``: the (repeated) values each query head reads;
- ``final_gradient`` ``[B, E]``: ``dM/d(residual)`` entering the final norm at the answer
  position, and ``clean_logit_diff`` ``[B]``.

Memory is linear in the tokens: the attention runs through PyTorch's
``scaled_dot_product_attention`` (no ``[T, T]`` probabilities are kept by finwidget), and
every kept tensor is ``O(L * T * (E + H*D))``. For the pass, the model's attention
implementation is switched (through transformers' ``AttentionInterface``) to one that
repeats the keys and values per query head before calling SDPA with the same mask and
scale, and is restored on every exit path; weights' ``.grad`` are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from finwidget.errors import InputError, UnsupportedModelError
from finwidget.model_parts import (
    ModelGeometry,
    attention_function,
    attention_module,
    decoder_layer,
    embed_tokens,
    final_norm,
    hook_head_outputs,
    remove_hooks,
    rotary_transpose,
)
from finwidget.task import check_finite_answer, eval_mode

ATTENTION_NAME = "finwidget_circuit_channels"
_active: list[dict] = []


def _per_query_head_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                              is_causal=None, **kwargs):
    """SDPA with the keys and values repeated per query head (query ``[B, H, T, D]``, key/value
    ``[B, Hkv, T, D]``, all after the rotary embedding); the innermost recording keeps the
    query and the repeated key and value of this layer."""
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None and kwargs.get(
            "sliding_window") < key.shape[2]:
        raise UnsupportedModelError("circuits support full causal attention (no softcap, no sliding window "
                                    "shorter than the input)")
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    if _active:
        _active[-1][getattr(module, "layer_idx", len(_active[-1]))] = (query, key, value)
    q_length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_length > 1 and attention_mask is None and causal)
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                            scale=scaling, is_causal=causal)
    return output.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(ATTENTION_NAME, _per_query_head_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


class _PerQueryHeadAttention:
    """Context: the model's attention through :func:`_per_query_head_attention`; every config's
    implementation restored on exit."""

    def __init__(self, model):
        self.model = model
        self.recorded: dict[int, tuple] = {}

    def __enter__(self):
        _register()
        self._switch = attention_function(self.model, ATTENTION_NAME)
        _active.append(self.recorded)
        try:
            self._switch.__enter__()
        except BaseException:
            _active.pop()
            raise
        return self

    def __exit__(self, *exc):
        if _active and _active[-1] is self.recorded:
            _active.pop()
        self._switch.__exit__(None, None, None)
        return False


@dataclass
class ChannelGradients:
    """What one clean forward + backward pass keeps (see the module docstring); float32, detached.

    residuals: ``L`` tensors ``[B, T, E]``.
    head_outputs, head_output_gradients: ``L`` tensors ``[B, T, H*D]``.
    channel_gradients: ``L`` tensors ``[3, B, H, T, D]`` (q, k, v; before the rotary embedding).
    values: ``L`` tensors ``[B, H, T, D]``.
    final_gradient: ``[B, E]`` at the answer position.
    clean_logit_diff: ``[B]``.
    attention_mask: ``[B, T]`` long.
    """

    residuals: list[torch.Tensor]
    head_outputs: list[torch.Tensor]
    head_output_gradients: list[torch.Tensor]
    channel_gradients: list[torch.Tensor]
    values: list[torch.Tensor]
    final_gradient: torch.Tensor
    clean_logit_diff: torch.Tensor
    attention_mask: torch.Tensor


def record_channel_gradients(model, task, batch: dict[str, torch.Tensor],
                             shifts: list[torch.Tensor] | None = None) -> ChannelGradients:
    """One forward and one backward pass of ``model`` on ``batch`` (an encoded batch); see the module.

    ``shifts``: per layer ``[B, T, H*D]`` added to every head's output during the pass (the
    points of an integrated-gradients path; the recorded head outputs and their gradients
    are those of the shifted outputs). None: the clean run.
    """
    geometry = ModelGeometry.of(model)
    layers = range(geometry.num_layers)
    residuals: dict[int, torch.Tensor] = {}
    head_outputs: dict[int, torch.Tensor] = {}
    rotary: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    final: dict[str, torch.Tensor] = {}

    def embed_leaf(module, args, output):
        return output.detach().requires_grad_(True)

    def residual_keeper(layer):
        def hook(module, args, kwargs):
            residuals[layer] = args[0] if args else kwargs["hidden_states"]
        return hook

    def rotary_keeper(layer):
        def hook(module, args, kwargs):
            embeddings = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
            if embeddings is None:
                raise UnsupportedModelError("the attention modules receive no position_embeddings (cos, sin); "
                                            "circuits need a rotary-embedding model like Qwen2 or Llama")
            rotary[layer] = embeddings
        return hook

    def head_keeper(layer):
        def hook(module, args):
            if shifts is None:
                head_outputs[layer] = args[0]
                return None
            shifted = args[0] + shifts[layer].to(args[0].device, args[0].dtype)
            head_outputs[layer] = shifted
            return (shifted,) + tuple(args[1:])
        return hook

    def final_keeper(module, args):
        final["residual"] = args[0]

    handles = []
    with eval_mode(model), torch.enable_grad(), _PerQueryHeadAttention(model) as attention:
        try:
            handles.append(embed_tokens(model).register_forward_hook(embed_leaf))
            for layer in layers:
                handles.append(decoder_layer(model, layer).register_forward_pre_hook(
                    residual_keeper(layer), with_kwargs=True))
                handles.append(attention_module(model, layer).register_forward_pre_hook(
                    rotary_keeper(layer), with_kwargs=True))
            handles += hook_head_outputs(model, layers, head_keeper)
            handles.append(final_norm(model).register_forward_pre_hook(final_keeper))
            out = model(**batch, use_cache=False, logits_to_keep=1)
        finally:
            remove_hooks(handles)
        logit_diff = task.logit_diff(out.logits[:, -1, :])
        check_finite_answer(logit_diff.detach(), "in the clean run (no intervention)" if shifts is None
                            else "on the integrated-gradients path")
        missing = [l for l in layers if l not in attention.recorded]
        if missing:
            raise UnsupportedModelError(f"layers {missing} did not run finwidget's attention function; this model's "
                                        "attention does not dispatch through transformers' AttentionInterface")
        recorded = [attention.recorded[l] for l in layers]
        wrt = [head_outputs[l] for l in layers] + [t for qkv in recorded for t in qkv] + [final["residual"]]
        gradients = torch.autograd.grad(logit_diff.sum(), wrt, allow_unused=True)
    gradients = [torch.zeros_like(t) if g is None else g for g, t in zip(gradients, wrt)]
    n = geometry.num_layers
    output_gradients = gradients[:n]
    channel = []
    for l in layers:
        g_query, g_key, g_value = gradients[n + 3 * l:n + 3 * l + 3]
        cos, sin = rotary[l]
        channel.append(torch.stack([rotary_transpose(g_query.float(), cos.float(), sin.float()),
                                    rotary_transpose(g_key.float(), cos.float(), sin.float()),
                                    g_value.float()]).detach())
    return ChannelGradients(
        residuals=[residuals[l].detach().float() for l in layers],
        head_outputs=[head_outputs[l].detach().float() for l in layers],
        head_output_gradients=[g.detach().float() for g in output_gradients],
        channel_gradients=channel,
        values=[recorded[l][2].detach().float() for l in layers],
        final_gradient=gradients[-1][:, -1, :].detach().float(),
        clean_logit_diff=logit_diff.detach().float().cpu(),
        attention_mask=batch["attention_mask"].detach(),
    )


def check_batch_lengths(clean: dict[str, torch.Tensor], other: dict[str, torch.Tensor], what: str) -> None:
    """An :class:`InputError` when ``other`` (a corrupted batch) does not line up token by token."""
    if clean["input_ids"].shape != other["input_ids"].shape or not torch.equal(
            clean["attention_mask"].cpu(), other["attention_mask"].cpu()):
        raise InputError(
            f"{what} statements must have the same token lengths as the clean ones (clean: "
            f"{clean['attention_mask'].sum(1).tolist()}, {what}: {other['attention_mask'].sum(1).tolist()})"
        )


def record_reference_run(model, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One forward pass (no gradient) of a reference batch (e.g. corrupted statements): per layer,
    every head's output ``[B, T, H*D]`` and the values each query head reads ``[B, H, T, D]``
    (float32, detached)."""
    geometry = ModelGeometry.of(model)
    layers = range(geometry.num_layers)
    head_outputs: dict[int, torch.Tensor] = {}

    def head_keeper(layer):
        def hook(module, args):
            head_outputs[layer] = args[0].detach().float()
        return hook

    handles = []
    with eval_mode(model), torch.inference_mode(), _PerQueryHeadAttention(model) as attention:
        try:
            handles = hook_head_outputs(model, layers, head_keeper)
            model(**batch, use_cache=False, logits_to_keep=1)
        finally:
            remove_hooks(handles)
    return [head_outputs[l] for l in layers], [attention.recorded[l][2].detach().float() for l in layers]
