"""Gradients of the prediction with respect to every head's attention probabilities.

The guide's snippet registers hooks that never fire (``register_hook`` on a module, and
fused SDPA never builds the probabilities). Here the attention probabilities are made
real nodes of the autograd graph: for one forward pass the model's attention function
is switched (through transformers' ``AttentionInterface``) to one that computes
``softmax(Q K^T * scale + mask)`` explicitly from the post-RoPE queries and keys and
keeps the result; the objective (the task's logit difference, or one token's logit) is
differentiated with respect to those tensors. The gradient is the total derivative:
it includes every path through later layers. The model's attention implementation is
restored on every exit path; model weights' ``.grad`` are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from finwidget.errors import InputError
from finwidget.interventions.cached_run import encode_statements
from finwidget.model_parts import ModelGeometry, attention_function, unembedding
from finwidget.task import EarningsTask, eval_mode, model_device

ATTENTION_NAME = "finwidget_attention_gradients"
_active_recorders: list[dict] = []


def _explicit_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention computed step by step; the probabilities ``[B, H, Tq, Tk]`` are kept for the
    innermost active recording (query ``[B, H, Tq, d]``, key/value ``[B, Hkv, Tk, d]``)."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if _active_recorders:
        _active_recorders[-1][getattr(module, "layer_idx", len(_active_recorders[-1]))] = probabilities
    output = torch.matmul(probabilities, value).transpose(1, 2).contiguous()
    return output, probabilities


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register(ATTENTION_NAME, _explicit_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, eager_mask)


class _ExplicitAttention:
    """Context: switch ``model`` to the explicit attention function, restore every config after."""

    def __init__(self, model):
        self.model = model
        self.recorded: dict[int, torch.Tensor] = {}

    def __enter__(self):
        _register()
        self._switch = attention_function(self.model, ATTENTION_NAME)
        _active_recorders.append(self.recorded)
        try:
            self._switch.__enter__()
        except BaseException:
            _active_recorders.pop()
            raise
        return self

    def __exit__(self, *exc):
        if _active_recorders and _active_recorders[-1] is self.recorded:
            _active_recorders.pop()
        self._switch.__exit__(None, None, None)
        return False


@dataclass
class AttentionGradients:
    """Attention probabilities and the objective's gradient with respect to them.

    gradients: ``'layer_{i}'`` -> ``[B, H, T, T]`` float32, d objective / d attention.
    attention: ``'layer_{i}'`` -> ``[B, H, T, T]`` float32 probabilities of the same run.
    objective: ``[B]`` float32, the value differentiated (logit difference or a logit).
    """

    gradients: dict[str, torch.Tensor]
    attention: dict[str, torch.Tensor]
    objective: torch.Tensor

    def head_scores(self, query: int | None = None) -> pd.DataFrame:
        """Per head: ``attribution`` = sum(attention * gradient) (first-order effect of
        removing the head's whole pattern), ``mean_abs_gradient``; over all query rows or
        one (e.g. ``query=-1``, the answer position). Averaged over the batch."""
        rows = []
        for name, gradient in self.gradients.items():
            attention = self.attention[name]
            if query is not None:
                gradient, attention = gradient[:, :, query], attention[:, :, query]
            layer = int(name.split("_")[1])
            reduce_dims = tuple(range(2, gradient.dim()))
            attribution = (attention * gradient).sum(dim=reduce_dims).mean(dim=0)
            magnitude = gradient.abs().mean(dim=reduce_dims).mean(dim=0)
            for head in range(gradient.shape[1]):
                rows.append({"layer": layer, "head": head, "attribution": float(attribution[head]),
                             "mean_abs_gradient": float(magnitude[head])})
        return pd.DataFrame(rows)


def attention_gradients(model, inputs, target_logit: int | None = None, task: EarningsTask | None = None,
                        layers=None) -> AttentionGradients:
    """Gradient of the prediction with respect to each head's attention probabilities.

    Args:
        model: a Hugging Face causal LM whose attention goes through ``AttentionInterface``
            (Qwen2, Llama, Mistral, ...).
        inputs: token ids ``[B, T]`` / ``[T]``, an encoded batch, or statements (with ``task``).
        target_logit: a token id: differentiate that token's logit at the last position
            (the guide's objective). Default: the task's logit difference (needs ``task``).
        task: the :class:`~finwidget.task.EarningsTask` (to encode statements and read the
            logit difference).
        layers: layers to return (default: all).

    Returns:
        :class:`AttentionGradients` with guide-style ``'layer_{i}'`` keys.
    """
    geometry = ModelGeometry.of(model)
    layers = list(range(geometry.num_layers)) if layers is None else [geometry.check_layer(l) for l in layers]
    if target_logit is None and task is None:
        raise InputError("pass task= (to differentiate the logit difference) or target_logit= (a token id)")
    if target_logit is not None:
        vocab = unembedding(model).weight.shape[0]
        if isinstance(target_logit, bool) or not isinstance(target_logit, int) or not 0 <= target_logit < vocab:
            raise InputError(f"target_logit must be a token id in [0, {vocab}), got {target_logit!r}")
    batch = encode_statements(task, inputs, model_device(model), "inputs")
    with eval_mode(model), torch.enable_grad(), _ExplicitAttention(model) as explicit:
        out = model(**batch, use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1, :]
        if target_logit is None:
            assert task is not None, "refused above: task= or target_logit= is given"
            objective = task.logit_diff(logits)
        else:
            objective = logits[:, target_logit].float()
        missing = [l for l in layers if l not in explicit.recorded]
        if missing:
            raise InputError(
                f"layers {missing} did not run the explicit attention function; this model's attention "
                "does not dispatch through transformers' AttentionInterface"
            )
        probabilities = [explicit.recorded[l] for l in layers]
        gradients = torch.autograd.grad(objective.sum(), probabilities, allow_unused=True)
    return AttentionGradients(
        gradients={
            f"layer_{l}": (g.detach().float() if g is not None else torch.zeros_like(p, dtype=torch.float32))
            for l, g, p in zip(layers, gradients, probabilities)
        },
        attention={f"layer_{l}": p.detach().float() for l, p in zip(layers, probabilities)},
        objective=objective.detach().float().cpu(),
    )
