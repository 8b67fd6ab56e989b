"""Where the explorer takes the analysis layer's per-layer and per-head readouts from.

The logit lens and the direct head contributions are computed by
:func:`finwidget.analysis.decision_pathway` (one extra forward pass with temporary
hooks, made once per statement and cached on the session); this module adapts its
tables to the explorer's shapes: ``[L]`` and ``[L, H]`` float32 numpy arrays.
"""

from __future__ import annotations

import numpy as np

from finwidget.errors import InputError


class AnalysisUnavailable(InputError):
    """The analysis layer cannot provide a readout for this model."""


def _pathway(session):
    cached = getattr(session, "_decision_pathway", None)
    if cached is None:
        from finwidget.analysis import decision_pathway

        try:
            cached = decision_pathway(session.model, session.task, session.batch)
        except InputError as err:
            raise AnalysisUnavailable(str(err)) from err
        session._decision_pathway = cached
    return cached


def logit_lens(session) -> np.ndarray:
    """``[L]`` float32: the logit difference read after each layer at the answer position."""
    lens = _pathway(session).logit_lens
    rows = lens[(lens["statement"] == 0) & (lens["layer"] >= 0)].sort_values("layer")
    return rows["logit_diff"].to_numpy(dtype=np.float32)


def direct_head_contributions(session) -> np.ndarray:
    """``[L, H]`` float32: each head's direct contribution to the logit difference."""
    heads = _pathway(session).heads
    heads = heads[heads["statement"] == 0]
    out = np.zeros((session.num_layers, session.num_heads), dtype=np.float32)
    out[heads["layer"].to_numpy(), heads["head"].to_numpy()] = heads["contribution"].to_numpy(dtype=np.float32)
    return out
