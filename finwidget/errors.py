"""Exceptions finwidget raises for bad input.

Every error names the problem and how to fix it. They derive from the built-in
exception a Python user would expect (``ValueError``, ``IndexError``, ...), so
existing ``except ValueError`` code keeps working.
"""


class FinwidgetError(Exception):
    """Base class of every error finwidget raises on purpose."""


class ModelLoadError(FinwidgetError, OSError):
    """A model or tokenizer could not be found, read, or is not a causal LM."""


class InputError(FinwidgetError, ValueError):
    """Text, token ids or options passed in are not usable (empty, too long, wrong type)."""


class AnswerWordError(FinwidgetError, ValueError):
    """An answer word of the task cannot be read from the tokenizer's vocabulary."""


class LocationError(FinwidgetError, IndexError):
    """A layer, head or position outside the model's geometry."""


class CaptureStateError(FinwidgetError, RuntimeError):
    """A capture or intervention used outside its lifetime, or nested where it cannot be."""


class LocationTypeError(LocationError, TypeError):
    """A layer, head or position given as something other than an integer (a float, bool, string)."""


class UnsupportedModelError(InputError):
    """The model lacks a part finwidget needs (its architecture and the missing part are named)."""


class OutputError(FinwidgetError, OSError):
    """A file finwidget was asked to write cannot be written (missing folder, read-only, full
    disk, wrong suffix), or what it would write is not valid (a non-finite number in JSON)."""
