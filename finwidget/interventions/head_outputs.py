"""Recording every head's output on some statements, for mean and resample interventions.

A head's output is its slice of the input of its layer's ``o_proj``. :class:`HeadOutputs`
keeps that input, ``[B, T, H*D]`` (shape letters: :mod:`finwidget.model_parts`), for the
layers asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from finwidget.errors import InputError
from finwidget.model_parts import ModelGeometry, embed_tokens, hook_head_outputs, remove_hooks
from finwidget.task import eval_mode, model_device


def coerce_batch(value, what: str = "input") -> dict[str, torch.Tensor]:
    """An encoded batch ``{"input_ids": [B, T] long, "attention_mask": [B, T] long}`` from a
    dict (e.g. ``EarningsTask.encode`` or a tokenizer's output) or a tensor of token ids."""
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise InputError(f"{what} is empty (0 statements); pass at least one statement")
        if any(isinstance(item, str) or hasattr(item, "text") for item in value):
            raise InputError(
                f"{what} is given as text here; encode it first (EarningsTask(tokenizer).encode(texts)) "
                "or pass it where a task is known (CachedRun, sweep_heads)"
            )
        value = torch.as_tensor(value)
    if isinstance(value, torch.Tensor):
        input_ids = value
        attention_mask = None
    elif isinstance(value, dict) or hasattr(value, "keys"):
        if "input_ids" not in value:
            raise InputError(f"{what} has no 'input_ids'; pass an encoded batch or a tensor of token ids")
        input_ids = value["input_ids"]
        attention_mask = value.get("attention_mask") if hasattr(value, "get") else None
    else:
        raise InputError(
            f"{what} must be an encoded batch (dict with input_ids) or a tensor of token ids, "
            f"got {type(value).__name__}"
        )
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    check_id_dtype(input_ids, what)
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise InputError(f"{what}'s input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0:
        raise InputError(f"{what} is empty (0 statements); pass at least one statement")
    if input_ids.shape[1] == 0:
        raise InputError(f"{what} has 0 tokens")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    else:
        attention_mask = torch.as_tensor(attention_mask)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask.unsqueeze(0)
        if attention_mask.shape != input_ids.shape:
            raise InputError(
                f"{what}'s attention_mask has shape {tuple(attention_mask.shape)}, "
                f"input_ids {tuple(input_ids.shape)}; they must match"
            )
        empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise InputError(
                f"{what}: row {empty[0]}'s attention_mask is all zeros (a statement without tokens); "
                "every statement needs at least one real token"
            )
    return {"input_ids": input_ids.long(), "attention_mask": attention_mask.long()}


def check_id_dtype(input_ids: torch.Tensor, what: str = "input_ids") -> None:
    """An :class:`InputError` when token ids are not integers (float ids would be truncated)."""
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise InputError(f"{what} must be integer token ids, got a {str(input_ids.dtype).replace('torch.', '')} tensor")


def check_token_ids(model, input_ids: torch.Tensor, what: str = "input_ids") -> None:
    """An :class:`InputError` when ``input_ids`` are not integers or hold an id outside the model's
    vocabulary (the embedding would fail with a bare IndexError, or read another model's ids)."""
    check_id_dtype(input_ids, what)
    if input_ids.numel() == 0:
        return
    vocab = int(embed_tokens(model).weight.shape[0])
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab:
        bad = low if low < 0 else high
        raise InputError(f"{what} holds token id {bad}, outside this model's vocabulary of {vocab} ids (0..{vocab - 1}); "
                         "encode the text with this model's tokenizer")


@dataclass(frozen=True)
class HeadOutputs:
    """Per-head outputs of a clean run.

    per_layer: layer -> ``[B, T, H*D]`` tensor (model dtype, on the
        layer's device), the input of that layer's ``o_proj``.
    attention_mask: ``[batch, tokens]`` long, 1 for real tokens (left padding is 0).
    """

    per_layer: dict[int, torch.Tensor]
    attention_mask: torch.Tensor

    @classmethod
    def record(cls, model, batch, layers: Iterable[int] | None = None, what: str = "reference") -> HeadOutputs:
        """Run ``model`` once on ``batch`` (no interventions) and keep the ``o_proj`` inputs of ``layers``."""
        batch = coerce_batch(batch, what)
        check_token_ids(model, batch["input_ids"], what)
        geometry = ModelGeometry.of(model)
        layers = range(geometry.num_layers) if layers is None else sorted({geometry.check_layer(l) for l in layers})
        recorded: dict[int, torch.Tensor] = {}
        handles = []

        def recorder(layer):
            def hook(module, args):
                recorded[layer] = args[0].detach()
            return hook

        try:
            handles = hook_head_outputs(model, layers, recorder)
            device = model_device(model)
            with torch.inference_mode(), eval_mode(model):
                model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    logits_to_keep=1,
                )
        finally:
            remove_hooks(handles)
        return cls(per_layer=recorded, attention_mask=batch["attention_mask"].cpu())

    @property
    def num_rows(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.attention_mask.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """``[batch]`` number of real tokens per row."""
        return self.attention_mask.sum(dim=1)

    def layer(self, layer: int) -> torch.Tensor:
        if layer not in self.per_layer:
            raise InputError(f"the recorded head outputs do not include layer {layer} (recorded: {sorted(self.per_layer)})")
        return self.per_layer[layer]

    def mean_over_tokens(self, layer: int) -> torch.Tensor:
        """``[H*D]`` float32: mean over every real token of every row."""
        values = self.layer(layer).float()
        mask = self.attention_mask.to(values.device).float().unsqueeze(-1)
        if not bool(mask.sum() > 0):
            raise InputError("the reference's attention mask is all zeros: there is no token to average over")
        return (values * mask).sum(dim=(0, 1)) / mask.sum()

    def mean_per_position(self, layer: int) -> torch.Tensor:
        """``[T, H*D]`` float32: mean over rows at each position.

        Needs every row to have the same length (no padding): positions of
        statements of different lengths do not correspond.
        """
        lengths = self.lengths
        if not bool((lengths == self.width).all()):
            raise InputError(
                "per-position mean needs reference statements of one token length, got lengths "
                f"{sorted(set(lengths.tolist()))}; use per_position=False for a mean over all tokens"
            )
        return self.layer(layer).float().mean(dim=0)
