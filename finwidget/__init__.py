"""finwidget: see and change what happens inside a language model that reads financial statements.

Names are imported lazily, so ``import finwidget`` stays fast and pulls in
torch/transformers only when a model-facing name is first used.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_model": "finwidget.loading",
    "load_demo_model": "finwidget.loading",
    "EarningsTask": "finwidget.task",
    "Prediction": "finwidget.task",
    "predict": "finwidget.task",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'finwidget' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
