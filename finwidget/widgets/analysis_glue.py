"""Where the explorer takes the analysis layer's per-layer and per-head readouts from.

The logit lens and the direct head contributions are computed by ``finwidget.analysis``;
this module adapts their results to the explorer's shapes (``[L]`` and ``[L, H]`` float32
numpy arrays for the session's one statement).
"""

from __future__ import annotations

import numpy as np

from finwidget.errors import InputError


class AnalysisUnavailable(InputError):
    """The analysis layer does not provide a readout the explorer asked for."""


def logit_lens(session) -> np.ndarray:
    """``[L]`` float32 logit difference after each layer, at the answer position."""
    raise AnalysisUnavailable("the logit lens is not available: finwidget.analysis does not provide it yet")


def direct_head_contributions(session) -> np.ndarray:
    """``[L, H]`` float32 direct contribution of each head to the logit difference."""
    raise AnalysisUnavailable(
        "direct head contributions are not available: finwidget.analysis does not provide them yet")
