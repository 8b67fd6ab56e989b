"""Exact path patching: one edge at a time, the sender patched only into the receiver's channel.

For an edge ``u -> (r, channel)`` (shape letters and notation:
:mod:`finwidget.circuits.attribution`) the receiver's layer ``l`` is re-run from the clean
run's cached input with head ``r``'s query (key, value) projection computed from
``norm_l(h_l + dc_u)`` instead of ``norm_l(h_l)``; every other head of layer ``l`` keeps its
clean output (with grouped-query attention the group's shared key/value is changed for
the re-run, and the group's other query heads are put back to their clean outputs, so
only head ``r`` reads the patched key/value); the layers after ``l`` then run normally, as
the first-order score's gradient assumes. A ``direct`` edge adds ``dc_u`` to the residual
entering the final norm at the answer position only. A ``reads`` edge puts the values head
``r`` reads in the corrupted run (with a mean reference: its mean value over the statement)
in place of the clean ones at the span's tokens (what the first-order ``(v - v') . dM/dv``
linearizes).

Every edge of one receiver layer is a row of one re-run batch (through
:meth:`finwidget.interventions.CachedRun.resume`); cost: one partial forward per edge,
batched. Effects are reported as for the first-order scores: carried, signed so that
positive supports the clean answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from finwidget.errors import InputError
from finwidget.interventions import CachedRun
from finwidget.model_parts import (
    ModelGeometry,
    attention_input_norm,
    final_norm,
    head_output_site,
    qkv_projections,
    remove_hooks,
    unembedding,
)

CHANNELS = ("q", "k", "v")


@dataclass(frozen=True)
class HeadEdge:
    """Head ``sender`` ``(layer, head)`` into channel ``channel`` of head ``receiver``."""

    sender: tuple[int, int]
    receiver: tuple[int, int]
    channel: str


@dataclass(frozen=True)
class DirectEdge:
    """Head ``sender`` ``(layer, head)`` into the residual the answer is read from."""

    sender: tuple[int, int]


@dataclass(frozen=True)
class ReadEdge:
    """Head ``receiver`` ``(layer, head)`` reading the values at ``tokens`` (statement positions)."""

    tokens: tuple[int, ...]
    receiver: tuple[int, int]


Edge = HeadEdge | DirectEdge | ReadEdge


def _sender_change(model, geometry: ModelGeometry, deltas, sender) -> torch.Tensor:
    """``dc_u`` ``[B, T, E]``: sender ``(layer, head)``'s change of the residual stream."""
    layer, head = sender
    columns = geometry.head_slice(head)
    weight = head_output_site(model, layer).weight.detach()[:, columns]  # [E, D]
    return deltas[layer][..., columns].to(weight.device, weight.dtype) @ weight.T


class _ReceiverRows:
    """Hooks for one re-run of layer ``layer``: row block ``i`` (``B`` rows each) gets head
    ``heads[i]``'s ``channels[i]`` projection replaced by ``projections[i]`` ``[B, T, D]`` and
    every other head's output put back to the clean one."""

    def __init__(self, model, geometry: ModelGeometry, layer: int, clean_outputs: torch.Tensor,
                 heads: list[int], channels: list[str], projections: list[torch.Tensor]):
        self.geometry, self.layer = geometry, layer
        self.clean_outputs = clean_outputs  # [B, T, H*D]
        self.heads, self.channels, self.projections = heads, channels, projections
        self.batch = clean_outputs.shape[0]
        self.model = model

    def _columns(self, head: int, channel: str) -> slice:
        g = self.geometry
        return g.head_slice(head) if channel == "q" else g.head_slice(g.kv_head_of(head))

    def projection_hook(self, channel: str):
        def hook(module, args, output):
            output = output.clone()
            length = output.shape[1]
            for block, (head, wanted) in enumerate(zip(self.heads, self.channels)):
                if wanted != channel:
                    continue
                rows = slice(block * self.batch, (block + 1) * self.batch)
                new = self.projections[block][:, -length:].to(output.device, output.dtype)
                output[rows, :, self._columns(head, channel)] = new
            return output
        return hook

    def output_hook(self, module, args):
        edited = args[0]
        length = edited.shape[1]
        clean = self.clean_outputs[:, -length:].to(edited.device, edited.dtype)
        restored = clean.repeat(len(self.heads), 1, 1)
        for block, head in enumerate(self.heads):
            rows, columns = slice(block * self.batch, (block + 1) * self.batch), self.geometry.head_slice(head)
            restored[rows, :, columns] = edited[rows, :, columns]
        return (restored,) + tuple(args[1:])

    def install(self) -> list:
        handles = []
        try:
            for channel, projection in zip(CHANNELS, qkv_projections(self.model, self.layer)):
                handles.append(projection.register_forward_hook(self.projection_hook(channel)))
            handles.append(head_output_site(self.model, self.layer).register_forward_pre_hook(self.output_hook))
        except BaseException:
            remove_hooks(handles)
            raise
        return handles


def exact_edge_effects(model, cached: CachedRun, deltas: Sequence[torch.Tensor], edges: Sequence[Edge],
                       max_rows: int = 64, value_baseline: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``[len(edges), B]`` float32: each edge's effect carried (positive supports the clean answer).

    Args:
        model: the model.
        cached: the clean run (:class:`~finwidget.interventions.CachedRun` with head outputs cached).
        deltas: per layer ``[B, T, H*D]``: reference minus clean output of every head.
        edges: :class:`HeadEdge`, :class:`DirectEdge`, :class:`ReadEdge` values.
        max_rows: re-run rows per call.
        value_baseline: per layer ``[B, H, T, D]``: the values the heads read in the corrupted
            run; a ``reads`` edge puts them in place of the clean values at its tokens (None:
            the head's mean value over the statement).
    """
    geometry = ModelGeometry.of(model)
    if any(h is None for h in cached.head_outputs):
        raise InputError("exact path patching needs a CachedRun with cache_head_outputs=True")
    clean = cached.clean_logit_diff  # [B]
    sign = torch.where(clean >= 0, 1.0, -1.0)
    result = torch.zeros(len(edges), cached.batch_size)
    by_layer: dict[int, list[int]] = {}
    direct = []
    for index, edge in enumerate(edges):
        if isinstance(edge, DirectEdge):
            direct.append(index)
        elif isinstance(edge, (HeadEdge, ReadEdge)):
            by_layer.setdefault(edge.receiver[0], []).append(index)
        else:
            raise InputError(f"not an edge: {edge!r}")
    if direct:
        patched = _direct_logit_diffs(model, cached, geometry, deltas, [edges[i].sender for i in direct])
        result[direct] = patched - clean
    for layer, indices in by_layer.items():
        step = max(1, max_rows // cached.batch_size)
        for start in range(0, len(indices), step):
            chunk = indices[start:start + step]
            patched = _receiver_logit_diffs(model, cached, geometry, deltas, layer, [edges[i] for i in chunk],
                                            value_baseline)
            result[chunk] = patched
            result[chunk] -= clean
    return -result * sign


def _direct_logit_diffs(model, cached: CachedRun, geometry, deltas, senders) -> torch.Tensor:
    """``[len(senders), B]``: the answer read from the final residual plus each sender's change."""
    captured = {}

    def keep(module, args):
        captured["residual"] = args[0][:, -1].detach()

    handle = final_norm(model).register_forward_pre_hook(keep)
    try:
        cached.resume(geometry.num_layers - 1, cached.residuals[-1])
    finally:
        handle.remove()
    residual = captured["residual"]  # [B, E]
    changes = torch.stack([_sender_change(model, geometry, deltas, s)[:, -1] for s in senders])  # [S, B, E]
    with torch.inference_mode():
        logits = unembedding(model)(final_norm(model)(residual.unsqueeze(0) + changes.to(residual.device)))
    return cached.task.logit_diff(logits.reshape(-1, logits.shape[-1])).float().cpu().view(len(senders), -1)


def _receiver_logit_diffs(model, cached: CachedRun, geometry, deltas, layer: int, edges,
                          value_baseline=None) -> torch.Tensor:
    """``[len(edges), B]``: re-run from ``layer`` with each edge's receiver channel patched."""
    residual = cached.residuals[layer]  # [B, T, E]
    norm = attention_input_norm(model, layer)
    projections: dict[str, torch.nn.Module] = dict(zip(CHANNELS, qkv_projections(model, layer)))
    heads, channels, new = [], [], []
    with torch.inference_mode():
        for edge in edges:
            head = edge.receiver[1]
            if isinstance(edge, HeadEdge):
                channel = edge.channel
                change = _sender_change(model, geometry, deltas, edge.sender).to(residual.device, residual.dtype)
                projected = projections[channel](norm(residual + change))
            else:  # ReadEdge: the corrupted run's values (or the head's mean value) at the span's tokens
                channel = "v"
                projected = projections["v"](norm(residual)).clone()
                columns = geometry.head_slice(geometry.kv_head_of(head))
                if value_baseline is not None:
                    replacement = value_baseline[layer][:, head].to(projected.device, projected.dtype)  # [B, T, D]
                else:
                    real = cached.batch["attention_mask"].to(projected.device).unsqueeze(-1).to(projected.dtype)
                    mean = (projected[..., columns] * real).sum(dim=1) / real.sum(dim=1)  # [B, D]
                    replacement = mean.unsqueeze(1).expand(-1, projected.shape[1], -1)
                for b, cols in enumerate(_columns_of(cached, edge.tokens)):
                    projected[b, cols, columns] = replacement[b, cols]
            columns = geometry.head_slice(head) if channel == "q" else geometry.head_slice(geometry.kv_head_of(head))
            heads.append(head)
            channels.append(channel)
            new.append(projected[..., columns])
    clean_outputs = cached.head_outputs[layer]
    assert clean_outputs is not None  # checked above: the run caches head outputs
    rows = _ReceiverRows(model, geometry, layer, clean_outputs, heads, channels, new)
    handles = rows.install()
    try:
        hidden = residual.repeat(len(edges), 1, 1)
        mask = cached.batch["attention_mask"].repeat(len(edges), 1)
        logits = cached.resume(layer, hidden, mask)
    finally:
        remove_hooks(handles)
    return cached.task.logit_diff(logits).float().cpu().view(len(edges), -1)


def _columns_of(cached: CachedRun, tokens: tuple[int, ...]) -> list[torch.Tensor]:
    """Per row: the batch columns of statement positions ``tokens`` (left padding skipped)."""
    mask = cached.batch["attention_mask"]
    width = mask.shape[1]
    out = []
    for row in range(mask.shape[0]):
        pad = width - int(mask[row].sum())
        out.append(torch.tensor([pad + t for t in tokens], dtype=torch.long))
    return out
