"""Shared by the bad-input catalogue (``tests/test_bad_input_*.py``): the demo model once per
session, a snapshot of everything about a model that a refused call must leave alone, and
:func:`refused`, which runs a call, checks its finwidget error and that the model is untouched.

"Untouched" means: every parameter and buffer bit-identical, no forward/backward hook on any
module (the dicts ``_forward_hooks``, ``_forward_pre_hooks``... compared module by module),
the same attention implementation, training flags and ``requires_grad`` flags, and the same
logits on a probe input (bit for bit: the same computation on the same machine).
"""

from __future__ import annotations

import pytest
import torch

from finwidget.errors import FinwidgetError

HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")


def _hooks(model) -> dict[str, int]:
    return {name: sum(len(getattr(module, d, {}) or {}) for d in HOOK_DICTS) for name, module in model.named_modules()}


def _probe_logits(model) -> torch.Tensor:
    ids = torch.arange(2, 14, dtype=torch.long).unsqueeze(0) % model.config.vocab_size
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.clone()


def model_snapshot(model) -> dict:
    """Everything a bad call must leave as it was (see the module docstring)."""
    config = model.config
    return {
        "parameters": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
        "hooks": _hooks(model),
        "attention": getattr(config, "_attn_implementation", None),
        "output_attentions": getattr(config, "output_attentions", None),
        "grads": [name for name, p in model.named_parameters() if p.grad is not None],
        "probe": _probe_logits(model),
    }


def assert_untouched(model, before: dict) -> None:
    """``model`` is exactly as ``before`` (a :func:`model_snapshot`) says, with no hook left."""
    after = model_snapshot(model)
    for kind in ("parameters", "buffers"):
        assert before[kind].keys() == after[kind].keys(), kind
        changed = [name for name in before[kind] if not torch.equal(before[kind][name], after[kind][name])]
        assert not changed, f"{kind} changed: {changed[:5]}"
    for key in ("requires_grad", "training", "hooks", "attention", "output_attentions", "grads"):
        assert before[key] == after[key], f"{key} changed"
    assert sum(after["hooks"].values()) == 0, "a hook was left on the model"
    assert torch.equal(before["probe"], after["probe"]), "the model's logits changed"


def refused(model, error: type[BaseException], call, match: str | None = None) -> BaseException:
    """Run ``call()``; it must raise ``error`` (a finwidget error) matching ``match`` and leave
    ``model`` untouched. Returns the exception."""
    assert issubclass(error, FinwidgetError), f"{error} is not a finwidget error"
    before = model_snapshot(model)
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, FinwidgetError)
    assert_untouched(model, before)
    return info.value


def accepted(model, call):
    """Run ``call()`` (it must not raise); the model must be untouched afterwards. Returns the result."""
    before = model_snapshot(model)
    result = call()
    assert_untouched(model, before)
    return result
