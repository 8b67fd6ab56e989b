"""Stopping a model run between layers: the error a cancelled run raises."""

from __future__ import annotations

from finwidget.errors import InputError


class RunCancelled(InputError):
    """A model run was stopped by its caller between layers (e.g. a newer click
    superseded it); whatever it changed (hooks, the model's mode) was restored."""
