"""The decision pathway: how the logit difference (increase - decrease) builds up.

One forward pass with temporary hooks reads, at the answer position (the last
column of a left-padded batch):

- the residual stream after the embeddings and after every layer, for the **logit
  lens**: ``lm_head(final_norm(h_l))`` read as the task's logit difference, as if the
  model stopped after layer ``l``;
- every layer's attention input to ``o_proj`` (the concatenated head outputs
  ``[H * d]``) and MLP output, and the final residual, for **direct contributions**.

Direct contributions treat the final RMSNorm at the answer position as a *frozen
linear map*: with the final residual ``r``, ``rms = sqrt(mean(r^2) + eps)`` is computed
once from the actual run and held fixed, so the logit difference is exactly linear in
the residual: ``logit_diff = (u * g / rms) . r (+ lm_head bias difference)`` with ``u``
the unembedding difference (``W_U[increase] - W_U[decrease]``) and ``g`` the norm weight.
The residual is the sum of the embeddings, every layer's ``o_proj`` output (which
splits by head: head ``h`` adds ``W_O[:, h*d:(h+1)*d] z_h``), any ``o_proj`` bias, and
every MLP output, so those contributions sum to the logit difference. The check is
made on every call (``DecisionPathway.max_abs_error``); a model whose residual stream is
not such a sum (e.g. extra norms after attention) raises ``InputError``.
The hooks are removed however the call ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from finwidget.errors import InputError
from finwidget.model_parts import (
    ModelGeometry,
    decoder_layers,
    embed_tokens,
    final_norm,
    head_output_site,
    hook_head_outputs,
    mlp_module,
    remove_hooks,
    unembedding,
)
from finwidget.task import EarningsTask, TwoAnswerTask, context_length, eval_mode, model_device


@dataclass
class DecisionPathway:
    """What ``decision_pathway`` measured for a batch of statements.

    logit_lens: DataFrame ``statement``, ``layer`` (-1 = embeddings), ``stage``
        ("embeddings" or "layer_i"), ``logit_diff``, ``p_increase``.
    heads: DataFrame ``statement``, ``layer``, ``head``, ``kv_head``, ``contribution``
        (each head's direct contribution to the final logit difference).
    components: DataFrame ``statement``, ``component`` ("embeddings", "attention",
        "attention_bias", "mlp", "lm_head_bias"), ``layer`` (-1 where none), ``contribution``;
        "attention" rows are each layer's heads summed.
    logit_diff: ``[B]`` float32 the model's actual logit difference.
    max_abs_error: largest |sum of contributions - logit_diff| over the batch.
    """

    logit_lens: pd.DataFrame
    heads: pd.DataFrame
    components: pd.DataFrame
    logit_diff: torch.Tensor
    max_abs_error: float


def _as_task(task_or_tokenizer) -> TwoAnswerTask:
    return task_or_tokenizer if isinstance(task_or_tokenizer, TwoAnswerTask) else EarningsTask(task_or_tokenizer)


def _as_batch(model, task: EarningsTask, inputs) -> dict[str, torch.Tensor]:
    device = model_device(model)
    if isinstance(inputs, dict):
        if "input_ids" not in inputs:
            raise InputError("a batch must be a dict with 'input_ids' (and 'attention_mask'), as EarningsTask.encode returns")
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    return task.encode(inputs, max_length=context_length(model), device=device)


def _parts(model):
    """The decoder layers, the final norm and the input embedding; every layer must have an
    ``o_proj`` and an MLP (:class:`~finwidget.errors.UnsupportedModelError` otherwise)."""
    layers = decoder_layers(model)
    for index in range(len(layers)):
        head_output_site(model, index)
        mlp_module(model, index)
    return layers, final_norm(model), embed_tokens(model)


def _norm_eps(norm) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    raise InputError(f"cannot read the epsilon of the final norm {type(norm).__name__}")


def _last(tensor) -> torch.Tensor:
    if isinstance(tensor, (tuple, list)):
        tensor = tensor[0]
    return tensor[:, -1].detach().float()


def decision_pathway(model, task, inputs) -> DecisionPathway:
    """Logit lens and direct contributions for one or more statements, in one forward pass.

    Args:
        model: a Hugging Face causal LM with Qwen2/Llama-style decoder layers.
        task: an ``EarningsTask`` (or a tokenizer, which makes the default task).
        inputs: a statement, a list of statements, or a batch from ``task.encode``.
    """
    task = _as_task(task)
    batch = _as_batch(model, task, inputs)
    layers, norm, embed = _parts(model)
    geometry = ModelGeometry.of(model)

    seen: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name):
        def hook(module, args, output):
            seen[name] = _last(output)
        return hook

    def keep_input(name):
        def hook(module, args):
            seen[name] = _last(args[0])
        return hook

    try:
        handles.append(embed.register_forward_hook(keep("embeddings")))
        for index, layer in enumerate(layers):
            handles.append(layer.register_forward_hook(keep(f"layer_{index}")))
            handles.append(mlp_module(model, index).register_forward_hook(keep(f"mlp_{index}")))
        handles += hook_head_outputs(model, range(len(layers)), lambda index: keep_input(f"z_{index}"))
        handles.append(norm.register_forward_pre_hook(keep_input("final")))
        with torch.inference_mode(), eval_mode(model):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1)
            actual = task.logit_diff(out.logits[:, -1, :]).float().cpu()
    finally:
        remove_hooks(handles)

    missing = [k for k in ("embeddings", "final") if k not in seen]
    if missing:
        raise InputError(f"the forward pass did not run through {missing}; the model's layout is not supported")
    with torch.inference_mode():
        lens_rows = _logit_lens_rows(model, task, norm, seen, len(layers))
        heads, components, total = _direct_contributions(model, task, norm, seen, geometry)
    error = float((total - actual).abs().max())
    scale = float(actual.abs().max()) + 1.0
    if error > 1e-2 * scale:
        raise InputError(
            f"the direct contributions do not add up to the logit difference (off by {error:.4g}); "
            f"{type(model).__name__}'s residual stream is not embeddings + attention + MLP outputs"
        )
    return DecisionPathway(
        logit_lens=pd.DataFrame.from_records(lens_rows, columns=["statement", "layer", "stage", "logit_diff",
                                                                 "p_increase"]),
        heads=heads,
        components=components,
        logit_diff=actual,
        max_abs_error=error,
    )


def _logit_lens_rows(model, task, norm, seen, num_layers) -> list[dict]:
    lm_head = unembedding(model)
    weight_dtype = lm_head.weight.dtype
    rows = []
    stages = [("embeddings", -1)] + [(f"layer_{i}", i) for i in range(num_layers)]
    for stage, layer in stages:
        hidden = seen[stage].to(device=lm_head.weight.device, dtype=weight_dtype)
        diff = task.logit_diff(lm_head(norm(hidden))).float().cpu()
        for b, value in enumerate(diff.tolist()):
            rows.append({"statement": b, "layer": layer, "stage": stage, "logit_diff": value,
                         "p_increase": float(torch.sigmoid(torch.tensor(value)))})
    return rows


def _direct_contributions(model, task, norm, seen, geometry: ModelGeometry):
    """Per-head ``[B, H]`` and per-component contributions to the logit difference, from the
    answer-position activations in ``seen`` (float32 ``[B, E]`` and ``[B, H*D]``)."""
    num_heads, head_dim = geometry.num_heads, geometry.head_dim
    final = seen["final"]  # [B, D] float32
    device = final.device
    rms = torch.sqrt(final.pow(2).mean(-1, keepdim=True) + _norm_eps(norm))
    gain = norm.weight.detach().float().to(device)
    unembed = task.unembedding_direction(model).float().to(device)
    readout = unembed * gain / rms  # [B, E]: logit_diff = readout . residual (+ bias)
    normed = norm(final.to(norm.weight.dtype)).float()
    # The model runs in its own dtype: allow its rounding (bf16 keeps ~3 significant digits).
    tolerance = max(1e-3, 4 * torch.finfo(norm.weight.dtype).eps)
    if not torch.allclose(normed, gain * final / rms, rtol=tolerance, atol=tolerance * float(normed.abs().max() + 1)):
        raise InputError(
            f"the final norm {type(norm).__name__} is not an RMSNorm (weight * x / rms); direct contributions "
            "need that form"
        )
    batch_size = final.shape[0]
    head_rows, comp_rows = [], []
    residual = seen["embeddings"].clone()
    total = (readout * seen["embeddings"]).sum(-1)
    for b in range(batch_size):
        comp_rows.append({"statement": b, "component": "embeddings", "layer": -1,
                          "contribution": float(total[b])})
    for index in range(geometry.num_layers):
        o_proj = head_output_site(model, index)
        weight = o_proj.weight.detach().float().to(device)  # [E, H*D]
        z = seen[f"z_{index}"]  # [B, H*D]
        per_head = ((readout @ weight) * z).reshape(batch_size, num_heads, head_dim).sum(-1)  # [B, H]
        attn_out = z @ weight.T
        mlp_out = seen[f"mlp_{index}"]
        mlp = (readout * mlp_out).sum(-1)
        residual += attn_out + mlp_out
        total = total + per_head.sum(-1) + mlp
        for b in range(batch_size):
            for h in range(num_heads):
                head_rows.append({"statement": b, "layer": index, "head": h, "kv_head": geometry.kv_head_of(h),
                                  "contribution": float(per_head[b, h])})
            comp_rows.append({"statement": b, "component": "attention", "layer": index,
                              "contribution": float(per_head[b].sum())})
        if o_proj.bias is not None:
            bias = o_proj.bias.detach().float().to(device)
            residual += bias
            bias_part = readout @ bias
            total = total + bias_part
            for b in range(batch_size):
                comp_rows.append({"statement": b, "component": "attention_bias", "layer": index,
                                  "contribution": float(bias_part[b])})
        for b in range(batch_size):
            comp_rows.append({"statement": b, "component": "mlp", "layer": index, "contribution": float(mlp[b])})
    lm_head = unembedding(model)
    if getattr(lm_head, "bias", None) is not None:
        inc, dec = task.answer_token_ids
        bias_diff = float(lm_head.bias[inc] - lm_head.bias[dec])
        total = total + bias_diff
        for b in range(batch_size):
            comp_rows.append({"statement": b, "component": "lm_head_bias", "layer": -1, "contribution": bias_diff})
    gap = float((residual - final).abs().max() / (final.abs().max() + 1e-6))
    if gap > tolerance:
        raise InputError(
            f"{type(model).__name__}'s final residual is not embeddings + attention + MLP outputs (relative gap "
            f"{gap:.2g}); direct contributions are not defined for this layout"
        )
    heads = pd.DataFrame.from_records(head_rows, columns=["statement", "layer", "head", "kv_head", "contribution"])
    components = pd.DataFrame.from_records(comp_rows, columns=["statement", "component", "layer", "contribution"])
    return heads, components, total.cpu()


def logit_lens(model, task, inputs) -> pd.DataFrame:
    """The logit difference read after the embeddings and after each layer (final norm +
    LM head applied to the residual stream at the answer position).

    Returns the ``DecisionPathway.logit_lens`` DataFrame; the last layer's row equals the
    model's output.
    """
    return decision_pathway(model, task, inputs).logit_lens


def head_direct_contributions(model, task, inputs) -> pd.DataFrame:
    """Each head's direct contribution to the final logit difference (``DecisionPathway.heads``).

    With the other components (``decision_pathway(...).components``) they sum to the
    model's logit difference; see this module's docstring for the frozen-norm rule.
    """
    return decision_pathway(model, task, inputs).heads
