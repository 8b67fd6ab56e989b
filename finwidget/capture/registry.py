"""Route a model's attention calls through finwidget's recorder, and back.

transformers' attention modules look their attention function up by name
(``config._attn_implementation``) in ``ALL_ATTENTION_FUNCTIONS``, and
``create_causal_mask`` looks the mask function up by the same name in
``ALL_MASK_ATTENTION_FUNCTIONS``. For every implementation a model runs ("sdpa",
"eager", "flash_attention_2", ...) this module registers a twin named
``finwidget_record_<original>``: its attention function hands the post-RoPE query and
key to the recording captures and then calls the original function with the original
arguments; its mask function *is* the original's mask function. So the model computes
exactly what it computed before, with the same kernels.

:class:`ModelRouting` switches one model to the twins and restores every config's
``_attn_implementation`` exactly as it was when the last capture on the model closes,
on every exit path. Captures on the same model may nest: each registers a sink, and the
model is switched back when the last one leaves.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from finwidget.errors import CaptureStateError

RECORDER_PREFIX = "finwidget_record_"

# id(attention module) -> its route while a capture is active on its model
_ROUTES: dict[int, _Route] = {}
# id(model) -> routing state while at least one capture is active on it
_ROUTED_MODELS: dict[int, ModelRouting] = {}
_LOCK = threading.RLock()

# sink(layer, module, query [B,H,q,d], key [B,Hkv,kv,d], attention_mask, kwargs)
Sink = Callable[[int, torch.nn.Module, torch.Tensor, torch.Tensor, object, dict], None]


@dataclass
class _Route:
    layer: int
    sinks: list[Sink] = field(default_factory=list)


def recorder_name(original: str) -> str:
    """Registry name of the recording twin of implementation ``original``."""
    return f"{RECORDER_PREFIX}{original}"


def _original_of(name: str) -> str:
    return name[len(RECORDER_PREFIX):]


def _module_eager_function(module) -> Callable:
    """The eager attention function defined next to the module's class (transformers' convention)."""
    function = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if function is None:
        raise CaptureStateError(
            f"{type(module).__name__} runs eager attention, but its module {type(module).__module__} has no "
            "`eager_attention_forward` for finwidget to delegate to; use method='output_attentions'"
        )
    return function


def _make_recorder(original: str) -> Callable:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def record_then_attend(module, query, key, value, attention_mask, *args, **kwargs):
        route = _ROUTES.get(id(module))
        if route is not None:
            for sink in tuple(route.sinks):
                sink(route.layer, module, query, key, attention_mask, kwargs)
        if original == "eager":
            delegate = _module_eager_function(module)
        else:
            # `output_attentions` only makes these implementations log that they cannot return weights;
            # the capture recomputes them from the recorded queries and keys instead.
            kwargs.pop("output_attentions", None)
            # `original` is a registered implementation (checked when routing): no default is used.
            delegate = ALL_ATTENTION_FUNCTIONS.get_interface(original, None)  # pyright: ignore[reportArgumentType]
        return delegate(module, query, key, value, attention_mask, *args, **kwargs)

    record_then_attend.__name__ = f"record_then_{original.replace('|', '_')}"
    return record_then_attend


_REGISTERED: set[str] = set()


def ensure_registered(original: str) -> str:
    """Register the recording twin of ``original`` (once) and return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = recorder_name(original)
    if name in _REGISTERED:
        return name
    AttentionInterface.register(name, _make_recorder(original))
    # Same mask function as the original. An original without one (custom kernels) builds no mask;
    # leaving the twin unregistered there makes transformers build none either.
    if original in ALL_MASK_ATTENTION_FUNCTIONS:
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    _REGISTERED.add(name)
    return name


def attention_modules(model) -> dict[int, torch.nn.Module]:
    """The model's self-attention modules by layer index.

    An attention module is one with an integer ``layer_idx``, a ``config`` and a class name
    containing "Attention" (transformers' convention). Raises if none is found.
    """
    found: dict[int, torch.nn.Module] = {}
    for module in model.modules():
        layer = getattr(module, "layer_idx", None)
        if (
            isinstance(layer, int)
            and "Attention" in type(module).__name__
            and getattr(module, "config", None) is not None
            and layer not in found
        ):
            found[layer] = module
    return found


_CALLS_REGISTRY: dict[type, bool] = {}


def _class_calls_registry(cls: type) -> bool:
    """Whether the source module of an attention class looks its function up in ALL_ATTENTION_FUNCTIONS."""
    if cls not in _CALLS_REGISTRY:
        source_module = sys.modules.get(cls.__module__)
        try:
            source_text = inspect.getsource(source_module) if source_module is not None else ""
        except (OSError, TypeError):
            source_text = ""
        _CALLS_REGISTRY[cls] = "ALL_ATTENTION_FUNCTIONS" in source_text
    return _CALLS_REGISTRY[cls]


def uses_attention_registry(model) -> tuple[bool, str]:
    """Whether the model's attention goes through transformers' attention registry, and why not."""
    modules = attention_modules(model)
    if not modules:
        return False, "no attention module with an integer `layer_idx` was found in the model"
    can_set = getattr(type(model), "_can_set_attn_implementation", None)
    if callable(can_set) and not can_set():
        return False, f"{type(model).__name__} says it cannot switch its attention implementation"
    for module in modules.values():
        if not _class_calls_registry(type(module)):
            return False, f"{type(module).__name__} does not call transformers' ALL_ATTENTION_FUNCTIONS"
        if getattr(module.config, "_attn_implementation", None) is None:
            return False, f"{type(module).__name__}'s config names no attention implementation"
    return True, ""


def _configs_of(model, modules) -> list:
    """Every config object the model and its attention modules hold (each once)."""
    seen: dict[int, object] = {}
    queue = [getattr(model, "config", None)] + [m.config for m in modules]
    queue += [getattr(m, "config", None) for m in model.modules()]
    while queue:
        config = queue.pop()
        if config is None or id(config) in seen or not hasattr(config, "_attn_implementation_internal"):
            continue
        seen[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            queue.append(getattr(config, key, None))
    return list(seen.values())


class ModelRouting:
    """Switches one model's attention modules to the recording twins while captures are open."""

    def __init__(self, model, modules: dict[int, torch.nn.Module]):
        self.model = model
        self.modules = modules
        self.sinks: list[Sink] = []
        self._configs = _configs_of(model, modules.values())
        self._saved = [(config, config._attn_implementation_internal) for config in self._configs]

    # ------------------------------------------------------------------ entering and leaving
    @classmethod
    def attach(cls, model, sink: Sink, layers: list[int]) -> ModelRouting:
        """Start routing ``model`` (unless a capture already does) and add ``sink`` for ``layers``."""
        with _LOCK:
            routing = _ROUTED_MODELS.get(id(model))
            if routing is None:
                routing = cls(model, attention_modules(model))
                routing._switch()
                _ROUTED_MODELS[id(model)] = routing
            try:
                for layer in layers:
                    module = routing.modules[layer]
                    _ROUTES.setdefault(id(module), _Route(layer)).sinks.append(sink)
                routing.sinks.append(sink)
            except BaseException:
                routing.detach(sink)
                raise
            return routing

    def detach(self, sink: Sink) -> None:
        """Remove ``sink``; restore the model when no sink is left. Safe to call twice."""
        with _LOCK:
            for module in self.modules.values():
                route = _ROUTES.get(id(module))
                if route is not None:
                    route.sinks[:] = [s for s in route.sinks if s != sink]
            self.sinks[:] = [s for s in self.sinks if s != sink]
            if not self.sinks:
                self._restore()

    def _switch(self) -> None:
        """Point every attention module's config at the recording twin of its implementation."""
        try:
            originals = {}
            for module in self.modules.values():
                original = module.config._attn_implementation  # pyright: ignore[reportAttributeAccessIssue] - HF config
                if original is None or not isinstance(original, str):
                    raise CaptureStateError(
                        f"{type(module).__name__}'s config names no attention implementation "
                        f"({original!r}); use method='output_attentions'"
                    )
                if original.startswith(RECORDER_PREFIX):
                    # A capture that was not closed properly left this behind (should not happen).
                    original = _original_of(original)
                if original == "eager":
                    _module_eager_function(module)
                originals[id(module.config)] = (module.config, original)
            names = {original for _, original in originals.values()}
            set_attn = getattr(self.model, "set_attn_implementation", None)
            if len(names) == 1 and callable(set_attn):
                # The official switch (validates the name). Should a model refuse it, the
                # per-config switch below still routes its attention modules.
                with contextlib.suppress(Exception):
                    set_attn(ensure_registered(names.pop()))
            for config, original in originals.values():
                config._attn_implementation_internal = ensure_registered(original)
        except BaseException:
            self._restore()
            raise

    def _restore(self) -> None:
        for config, implementation in self._saved:
            config._attn_implementation_internal = implementation
        for module in self.modules.values():
            route = _ROUTES.get(id(module))
            if route is not None and not route.sinks:
                del _ROUTES[id(module)]
        if _ROUTED_MODELS.get(id(self.model)) is self:
            del _ROUTED_MODELS[id(self.model)]


def active_routing(model) -> ModelRouting | None:
    """The routing state of ``model`` while a registry capture is open on it."""
    return _ROUTED_MODELS.get(id(model))
