"""Edge attribution patching: every head -> head (q/k/v), head -> answer and token -> head score.

Notation (shape letters: :mod:`finwidget.model_parts`): ``M`` is the answer's logit
difference of the clean run; head ``u`` of layer ``j`` writes ``c_u = z_u W_O,u^T``
``[T, E]`` into the residual stream (``z_u`` its output, ``W_O,u`` its columns of
``o_proj``); the reference run (a corrupted statement, or the mean of the head's output over
reference statements, or zero) gives ``z'_u`` and ``dc_u = (z'_u - z_u) W_O,u^T``.

- **head -> head edge** ``u -> (r, channel)`` for a head ``r`` of a later layer ``l`` and
  channel ``q``, ``k`` or ``v``: patching ``z'_u`` into *only* the input that head ``r``'s
  query (key, value) projection reads, i.e. ``norm_l(h_l + dc_u)`` instead of ``norm_l(h_l)``
  for that one projection of that one head, everything else clean (the path goes through
  the residual stream directly; MLPs and other heads in between see the clean values).
  To first order the change of ``M`` is ``sum_t dc_u[t] . G_{r,channel}[t]`` with
  ``G = J_norm(h_l)^T W_channel,r^T dM/d(projection of head r)`` ``[T, E]``: the gradient
  of the receiver's channel pulled back through its projection rows and the input norm
  (an exact vector-Jacobian product of the norm module, so RMSNorm and LayerNorm both work).
  *Grouped-query attention*: the key and value projections of a KV group are shared by
  its query heads; the ``k``/``v`` edge into query head ``r`` uses only the part of the
  shared projection's gradient that flows through head ``r``'s attention (see
  :mod:`finwidget.circuits.recording`), i.e. the edge patches the key (value) *as head r
  reads it*, leaving the group's other heads clean. The ``k``/``v`` edges into the heads
  of one group add up to patching the group's shared key (value).
- **head -> answer edge** (``direct``): ``dc_u`` added to the residual stream entering
  the final norm only: ``dc_u[answer] . dM/d(final residual)``.
- **head effect**: patching the head's whole output, ``sum_t (z'_u - z_u) . dM/dz_u``
  (attribution patching, as :func:`finwidget.interventions.attribution_patching`).
- **token -> head read** ``reads[t]`` for head ``r``: ``(v_r[t] - v'_r[t]) . dM/dv_r[t]``
  (gradient times difference), where ``v_r[t]`` is the value head ``r`` reads at key position
  ``t`` in the clean run and ``v'_r[t]`` the one it reads in the corrupted run (with a mean
  reference, which has no positions: the head's mean value over the statement's own
  tokens): the first-order effect of letting head ``r`` read the reference's content at
  ``t`` with its attention pattern unchanged. A head's output is linear in its values, so
  against a zero baseline these would add up exactly to the head's ``z_r . dM/dz_r``; a zero
  baseline is not used because the part every token shares (a value's constant offset)
  swamps the token-specific part. Summed over a line item's tokens they are the ``reads``
  edges. Corrupted statements make the cleaner reference here: only the tokens whose
  content differs are compared. Against the mean value, a line whose values are far from
  the head's average also scores, even when it is not the evidence (on the demo model,
  *Operating income*, which the model must tell apart from *Operating cash flow*).

Every score is reported as the effect the edge *carries*, signed so that a positive
effect supports the clean answer: ``-(first-order change of M) * sign(M)`` for patching,
``((v - v') . dM/dv) * sign(M)`` for reads. The cost is one clean forward + backward pass, one
forward pass of the reference (no gradient) and a few dense products; nothing is
``[T, T]`` or ``[T, edges]``: the products run over chunks of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from finwidget.circuits.recording import ChannelGradients
from finwidget.model_parts import ModelGeometry, attention_input_norm, head_output_site, qkv_projections

CHANNEL_INDEX = {"q": 0, "k": 1, "v": 2}
_CHUNK_BYTES = 256 * 2**20  # working memory of one token chunk's products


@dataclass
class EdgeAttribution:
    """First-order effects carried (positive: supports the clean answer), per statement.

    head_effects: ``[B, L, H]``: each head's whole output patched.
    head_edges: ``[B, L, 3, H, L, H]``: ``[b, l, c, r, j, u]`` is the edge from head ``u`` of
        layer ``j`` into channel ``c`` (0 q, 1 k, 2 v) of head ``r`` of layer ``l``; 0 where
        ``j >= l``.
    direct_edges: ``[B, L, H]``: head -> answer.
    token_reads: ``[B, L, H, T]``: what each head reads from each key position.
    clean_logit_diff: ``[B]``.
    attention_mask: ``[B, T]``.
    """

    head_effects: torch.Tensor
    head_edges: torch.Tensor
    direct_edges: torch.Tensor
    token_reads: torch.Tensor
    clean_logit_diff: torch.Tensor
    attention_mask: torch.Tensor


def _norm_vjp(norm: torch.nn.Module, residual: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """``J_norm(residual)^T v`` for each of ``R`` cotangents: residual ``[B, T, E]``, cotangents
    ``[R, B, T, E]`` -> ``[R, B, T, E]``: one forward of the norm, its vector-Jacobian product
    mapped over the cotangents (``torch.func.vjp`` + ``vmap``: no ``R`` copies of the residual;
    the same numbers as running the norm on ``R`` copies and back-propagating each)."""
    with torch.no_grad():  # no graph towards the norm's weights (torch.func differentiates regardless)
        normed, pull_back = torch.func.vjp(norm, residual.detach())[:2]  # (output, vjp_fn) without has_aux
        (pulled,) = torch.vmap(pull_back)(cotangents.to(normed.dtype))
    return pulled.float()


def _centred_reads(values: torch.Tensor, value_gradients: torch.Tensor, mask: torch.Tensor,
                   baseline: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, H, T]``: ``(v[t] - v_ref[t]) . dM/dv[t]`` per query head (values and gradients
    ``[B, H, T, D]``, mask ``[B, T]``); ``v_ref`` is ``baseline`` (the reference run's values,
    same shape) or, when None, the mean of ``v`` over each statement's own tokens."""
    if baseline is None:
        weights = mask.view(mask.shape[0], 1, -1, 1)
        baseline = (values * weights).sum(dim=2, keepdim=True) / weights.sum(dim=2, keepdim=True).clamp(min=1)
    return ((values - baseline.to(values.device)) * value_gradients).sum(dim=-1) * mask.view(mask.shape[0], 1, -1)


def _receiver_weights(model, layer: int, geometry: ModelGeometry, device) -> torch.Tensor:
    """``[3, H, D, E]``: the projection rows each query head reads through, per channel (a KV
    head's rows repeated for each query head of its group)."""
    q_proj, k_proj, v_proj = qkv_projections(model, layer)
    h, d, e = geometry.num_heads, geometry.head_dim, geometry.hidden_size
    rows = [q_proj.weight.detach().float().view(h, d, e)]
    for proj in (k_proj, v_proj):
        rows.append(proj.weight.detach().float().view(geometry.num_kv_heads, d, e)
                    .repeat_interleave(geometry.group_size, dim=0))
    return torch.stack(rows).to(device)


def all_receiver_weights(model, device) -> dict[int, torch.Tensor]:
    """Layer ``l >= 1`` -> ``[3, H, D, E]`` float32 on ``device``: the projection rows each query
    head reads through (computed once per model and reused by every pass of a path)."""
    geometry = ModelGeometry.of(model)
    return {l: _receiver_weights(model, l, geometry, device) for l in range(1, geometry.num_layers)}


def edge_attribution(model, recorded: ChannelGradients, deltas: list[torch.Tensor],
                     clean_logit_diff: torch.Tensor | None = None, value_baseline: list[torch.Tensor] | None = None,
                     chunk_bytes: int = _CHUNK_BYTES, with_reads: bool = True,
                     receiver_weights: dict[int, torch.Tensor] | None = None) -> EdgeAttribution:
    """Every first-order score from one recorded pass (see the module docstring).

    Args:
        model: the model the pass ran on (its weights are read, not changed).
        recorded: :func:`~finwidget.circuits.recording.record_channel_gradients`' result.
        deltas: per layer ``[B, T, H*D]``: the reference output minus the clean output of every
            head (0 at padding).
        clean_logit_diff: ``[B]``: the clean run's answer, whose sign the effects are aligned
            with (default: ``recorded``'s, when it is the clean run).
        value_baseline: per layer ``[B, H, T, D]``: the values the heads read in the reference
            run (corrupted statements), for the token reads; None: each head's mean value.
        chunk_bytes: working memory of one token chunk's products.
        with_reads: compute the token reads (False: zeros, for the later points of an
            integrated-gradients path, whose reads are not used).
        receiver_weights: :func:`receiver_weights`' result, when already computed.
    """
    geometry = ModelGeometry.of(model)
    n_layers, n_heads, d = geometry.num_layers, geometry.num_heads, geometry.head_dim
    batch, length = recorded.attention_mask.shape
    device = recorded.residuals[0].device
    clean = recorded.clean_logit_diff if clean_logit_diff is None else clean_logit_diff
    sign = torch.sign(clean).to(device)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)  # [B]
    mask = recorded.attention_mask.to(device).float()

    deltas = [delta.to(device).float() * mask.unsqueeze(-1) for delta in deltas]
    output_weights = [head_output_site(model, l).weight.detach().float().to(device)
                      .view(geometry.hidden_size, n_heads, d) for l in range(n_layers)]  # [E, H, D]

    head_change = torch.stack([
        (deltas[l] * recorded.head_output_gradients[l].to(device)).view(batch, length, n_heads, d).sum(dim=(1, 3))
        for l in range(n_layers)
    ], dim=1)  # [B, L, H]
    final_gradient = recorded.final_gradient.to(device)  # [B, E]
    direct_change = torch.stack([
        torch.einsum("bhd,ehd,be->bh", deltas[l][:, -1].view(batch, n_heads, d), output_weights[l], final_gradient)
        for l in range(n_layers)
    ], dim=1)  # [B, L, H]

    edge_change = torch.zeros(batch, n_layers, 3, n_heads, n_layers, n_heads, device=device)
    # senders [L*H, Tc, E] and, per receiver layer, ~5 tensors [3H, Tc, E] (cotangents, the norm's
    # input copies, output and pulled-back gradient), float32, per row of the batch
    per_token = (n_layers + 15) * n_heads * batch * geometry.hidden_size * 4
    chunk = max(1, min(length, chunk_bytes // max(1, per_token)))
    receivers = receiver_weights if receiver_weights is not None else all_receiver_weights(model, device)
    for start in range(0, length, chunk):
        stop = min(length, start + chunk)
        # every sender's change of the residual stream on these tokens: [L*H, B, Tc, E]
        senders = torch.cat([
            torch.einsum("bthd,ehd->hbte", deltas[j][:, start:stop].view(batch, stop - start, n_heads, d),
                         output_weights[j])
            for j in range(n_layers - 1)
        ])
        # [B, L*H, Tc*E]: one matrix per row of the batch (explicit matmuls: einsum's permuted
        # copies of these tensors cost more than the products)
        senders_by_row = senders.transpose(0, 1).reshape(batch, senders.shape[0], -1)
        tokens = stop - start
        for l in range(1, n_layers):
            gradient = recorded.channel_gradients[l][..., start:stop, :].to(device)  # [3, B, H, Tc, D]
            cotangents = torch.matmul(gradient.transpose(1, 2).reshape(3 * n_heads, batch * tokens, d),
                                      receivers[l].reshape(3 * n_heads, d, -1))  # [3H, B*Tc, E]
            pulled = _norm_vjp(attention_input_norm(model, l), recorded.residuals[l][:, start:stop].to(device),
                               cotangents.view(3 * n_heads, batch, tokens, -1))  # [3H, B, Tc, E]
            pulled_by_row = pulled.transpose(0, 1).reshape(batch, 3 * n_heads, -1)  # [B, 3H, Tc*E]
            scores = torch.bmm(pulled_by_row, senders_by_row[:, :l * n_heads].transpose(1, 2))  # [B, 3H, l*H]
            edge_change[:, l, :, :, :l, :] += scores.view(batch, 3, n_heads, l, n_heads)

    if not with_reads:
        reads = torch.zeros(batch, n_layers, n_heads, length, device=device)
    else:
        reads = torch.stack([_centred_reads(recorded.values[l].to(device), recorded.channel_gradients[l][2].to(device),
                                            mask, None if value_baseline is None else value_baseline[l])
                             for l in range(n_layers)], dim=1)  # [B, L, H, T]
    return EdgeAttribution(
        head_effects=(-head_change * sign.view(-1, 1, 1)).cpu(),
        head_edges=(-edge_change * sign.view(-1, 1, 1, 1, 1, 1)).cpu(),
        direct_edges=(-direct_change * sign.view(-1, 1, 1)).cpu(),
        token_reads=(reads * sign.view(-1, 1, 1, 1) * mask.view(batch, 1, 1, length)).cpu(),
        clean_logit_diff=clean.cpu(),
        attention_mask=recorded.attention_mask.cpu(),
    )


def mean_attribution(parts: list[EdgeAttribution]) -> EdgeAttribution:
    """The average of several :class:`EdgeAttribution` (the points of an integrated-gradients
    path); token reads and the clean answer are the first one's (the clean run's)."""
    first = parts[0]
    return EdgeAttribution(
        head_effects=torch.stack([p.head_effects for p in parts]).mean(dim=0),
        head_edges=torch.stack([p.head_edges for p in parts]).mean(dim=0),
        direct_edges=torch.stack([p.direct_edges for p in parts]).mean(dim=0),
        token_reads=first.token_reads,
        clean_logit_diff=first.clean_logit_diff,
        attention_mask=first.attention_mask,
    )
