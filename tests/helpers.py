"""Test helpers that are not fixtures: statements, batches, reference computations, hook counts.

The models and tokenizers the tests build are fixtures in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import random

import torch

ITEMS = ("Revenue", "Net income", "Operating cash flow", "Total assets", "Gross margin")


def statement(seed: int, lines: int | None = None) -> str:
    """A small statement: ``lines`` line items with a signed change and two years."""
    rng = random.Random(seed)
    count = lines if lines is not None else rng.randint(2, 4)
    rows = []
    for item in rng.sample(ITEMS, count):
        previous = rng.randint(10, 9999)
        change = rng.randint(-previous + 1, 2000)
        rows.append(f"{item}: change {change:+,} | {previous + change:,} | {previous:,}")
    return "\n".join(rows)


def sharpen_attention(model, factor: float):
    """Scale every layer's q_proj and k_proj (weights and biases) by ``factor`` in place."""
    with torch.no_grad():
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                projection.weight.mul_(factor)
                if projection.bias is not None:
                    projection.bias.mul_(factor)
    return model


def same_shape_statement(text: str, seed: int) -> str:
    """``text`` with every digit and sign redrawn: different numbers, the same tokens count."""
    rng = random.Random(seed)
    out = []
    for char in text:
        if char.isdigit():
            out.append(str(rng.randint(1, 9)))
        elif char in "+-":
            out.append(rng.choice("+-"))
        else:
            out.append(char)
    return "".join(out)


def left_padded_batch(lengths=(24, 19, 13), seed: int = 1) -> dict[str, torch.Tensor]:
    """Random token ids, left-padded like EarningsTask.encode: ``[B, T]`` ids and 0/1 mask."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.zeros((len(lengths), width), dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, width - length:] = torch.randint(1, 128, (length,), generator=generator)
        attention_mask[row, width - length:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def eager_attentions(model, batch, *, keep_dtype: bool = False, **kwargs) -> tuple[torch.Tensor, ...]:
    """Per-layer ``[B, H, T, T]`` float32 weights from the eager path with output_attentions (the
    reference); ``keep_dtype`` returns them in the model's dtype instead (a float64 reference).
    The model's attention implementation is restored afterwards."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(**batch, output_attentions=True, **kwargs)
    finally:
        model.set_attn_implementation(original)
    return tuple(a if keep_dtype else a.float() for a in out.attentions)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def full_forward_logit_diff(model, task, batch) -> torch.Tensor:
    """The task's logit difference from a plain full forward (all positions' logits)."""
    with torch.inference_mode():
        all_logits = model(**batch).logits
    return task.logit_diff(all_logits[:, -1, :]).float()


def registered_hooks(model) -> int:
    """How many forward/backward hooks are registered on any module of ``model``."""
    total = 0
    for module in model.modules():
        for name in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            total += len(getattr(module, name, {}) or {})
    return total


def assert_model_clean(model, batch, reference_logits, implementation="sdpa", hooks_before=None):
    """The model is as it was: implementation, no routes, no hooks, bit-identical logits."""
    from finwidget.capture.registry import _ROUTED_MODELS, _ROUTES

    assert model.config._attn_implementation == implementation
    assert all(m.config._attn_implementation == implementation
               for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config"))
    assert id(model) not in _ROUTED_MODELS
    assert not any(route.sinks for route in _ROUTES.values())
    if hooks_before is not None:
        assert registered_hooks(model) == hooks_before
    assert not model.config.output_attentions
    assert torch.equal(logits(model, batch), reference_logits)


def single_thread():
    """Fixture body: run a test module with one torch thread, then restore the setting.

    The models here are tiny; on a CPU shared with other jobs, a second thread mostly
    spins waiting (measured: 3-8x more CPU time for the same work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def sweep_in_progress(explorer):
    """The explorer as it is while a sweep runs beside the kernel: ``explorer.sweeping`` set
    and ``explorer.model_lock`` held by another thread (what ``ModelWorker`` does for a sweep)."""
    import threading

    holding, done = threading.Event(), threading.Event()

    def hold():
        with explorer.model_lock:
            holding.set()
            done.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(60)
    explorer.sweeping = True
    try:
        yield
    finally:
        explorer.sweeping = False
        done.set()
        thread.join()
