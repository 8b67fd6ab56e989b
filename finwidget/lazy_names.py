"""Names a package exports lazily: imported from their module the first time they are read.

``import finwidget`` and ``import finwidget.interpretability_tools`` stay fast this way;
torch, transformers and the widgets load only when a name that needs them is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, sources: Mapping[str, str], namespace: dict[str, Any],
                 special: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``.

    Args:
        package: the importing module's name (for the error message).
        sources: public name -> module that defines it.
        namespace: the module's ``globals()``; a name, once loaded, is cached there.
        special: optional ``name -> value`` for names built rather than imported; it
            raises ``KeyError`` for names it does not build.
    """

    def load(name: str) -> Any:
        if special is not None:
            try:
                value = special(name)
            except KeyError:
                pass
            else:
                namespace[name] = value
                return value
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    return load
