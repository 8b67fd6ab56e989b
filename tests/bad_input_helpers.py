"""Shared checks for the bad-input catalogues, ``tests/test_bad_input_<area>.py``.

A catalogue lists realistic bad inputs of one area (loading, CLI, task, capture,
interventions, widget protocol, ...) as ``pytest.param(..., id="what a user did")`` and
checks, for each:

1. the finwidget error class and a phrase of its message, with ``pytest.raises``;
2. where a model was given, that the model came back exactly as it was:
   ``assert_model_untouched(model, fn)`` runs ``fn`` and compares a snapshot taken
   before and after (weights and buffers bit-identical, no hook added, same training
   flags, attention implementation, config and gradients, the same torch global
   state, and bit-identical logits on a probe input);
3. where files were given, that they are unchanged: ``folder_digest(path)``.

Usage::

    with pytest.raises(LocationError, match="layer 9"):
        assert_model_untouched(model, lambda: capture_attention(model, layers=[9]))
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

HOOK_DICTS = (
    "_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
    "_state_dict_hooks", "_load_state_dict_pre_hooks",
)


def hook_count(model: torch.nn.Module) -> int:
    """How many hooks of any kind are registered on any module of ``model``."""
    return sum(len(getattr(m, name, None) or {}) for m in model.modules() for name in HOOK_DICTS)


def probe_input(model: torch.nn.Module, length: int = 8) -> torch.Tensor:
    """``[1, length]`` token ids, fixed, inside the model's vocabulary."""
    vocab = model.get_input_embeddings().weight.shape[0]
    return (torch.arange(length) * 7 % vocab).unsqueeze(0).to(model.get_input_embeddings().weight.device)


@dataclass
class ModelSnapshot:
    """Everything a finwidget call must leave as it found it."""

    tensors: dict[str, torch.Tensor]
    hooks: int
    training: tuple[bool, ...]
    requires_grad: tuple[bool, ...]
    grads: tuple[bool, ...]
    attn_implementation: str | None
    config: dict
    default_dtype: torch.dtype
    grad_enabled: bool
    logits: torch.Tensor | None

    @classmethod
    def take(cls, model: torch.nn.Module, probe: torch.Tensor | None = None) -> ModelSnapshot:
        logits = None
        if probe is not None:
            with torch.no_grad():
                logits = model(input_ids=probe).logits.detach().clone()
        config = getattr(model, "config", None)
        return cls(
            tensors={k: v.detach().clone() for k, v in model.state_dict(keep_vars=False).items()},
            hooks=hook_count(model),
            training=tuple(m.training for m in model.modules()),
            requires_grad=tuple(p.requires_grad for p in model.parameters()),
            grads=tuple(p.grad is not None for p in model.parameters()),
            attn_implementation=getattr(config, "_attn_implementation", None),
            config=config.to_dict() if config is not None else {},
            default_dtype=torch.get_default_dtype(),
            grad_enabled=torch.is_grad_enabled(),
            logits=logits,
        )

    def assert_same(self, other: ModelSnapshot, what: str = "the call") -> None:
        assert other.hooks == self.hooks, f"{what} left {other.hooks - self.hooks} hook(s) on the model"
        assert other.training == self.training, f"{what} changed a training flag"
        assert other.requires_grad == self.requires_grad, f"{what} changed requires_grad"
        assert other.grads == self.grads, f"{what} left gradients on the weights"
        assert other.attn_implementation == self.attn_implementation, f"{what} changed the attention implementation"
        assert other.config == self.config, f"{what} changed the model's config"
        assert other.default_dtype == self.default_dtype, f"{what} changed torch's default dtype"
        assert other.grad_enabled == self.grad_enabled, f"{what} changed torch's grad mode"
        assert other.tensors.keys() == self.tensors.keys(), f"{what} added or removed weights/buffers"
        for name, value in self.tensors.items():
            assert torch.equal(other.tensors[name], value), f"{what} changed {name}"
        if self.logits is not None:
            assert torch.equal(other.logits, self.logits), f"{what} changed the model's logits"


def assert_model_untouched(model: torch.nn.Module, fn, *, probe: torch.Tensor | None = None, what: str = "the call"):
    """Run ``fn()`` and assert ``model`` is exactly as before, whether ``fn`` returns or raises.

    Returns what ``fn`` returns; an exception from ``fn`` propagates (after the check), so
    wrap the call in ``pytest.raises`` to assert the error class.
    """
    probe = probe_input(model) if probe is None else probe
    before = ModelSnapshot.take(model, probe)
    try:
        return fn()
    finally:
        before.assert_same(ModelSnapshot.take(model, probe), what)


def folder_digest(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``path`` (to check user files are unchanged)."""
    path = Path(path)
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*")) if p.is_file()
    }


_PROGRESS_BAR = re.compile(r"^[^|]*:\s*\d+%\|")  # tqdm, e.g. "Loading weights: 100%|####| 26/26 [...]"


def assert_one_line_error(stderr: str, *phrases: str) -> str:
    """A command-line user error: exactly one non-empty stderr line (progress bars aside), no
    traceback, naming ``phrases``."""
    lines = [line for line in re.split(r"[\r\n]+", stderr) if line.strip() and not _PROGRESS_BAR.match(line)]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    return lines[0]
