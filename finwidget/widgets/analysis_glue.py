"""Where the explorer takes the analysis layer's per-layer and per-head readouts from.

The direct head contributions come from :func:`finwidget.analysis.decision_pathway`
(one extra forward pass with temporary hooks, made when first asked for and cached on
the session); the logit lens is read from the clean run the session already cached.
Both come out in the explorer's shapes: ``[L]`` and ``[L, H]`` float32 numpy arrays.
"""

from __future__ import annotations

import numpy as np

from finwidget.errors import InputError


class AnalysisUnavailable(InputError):
    """The analysis layer cannot provide a readout for this model."""


def _pathway(session):
    cached = getattr(session, "_decision_pathway", None)
    if cached is None:
        if session.model is None:
            raise AnalysisUnavailable(
                "direct contributions need the model (this explorer shows recorded attention)"
            )
        from finwidget.analysis import decision_pathway

        try:
            cached = decision_pathway(session.model, session.task, session.batch)
        except InputError as err:
            raise AnalysisUnavailable(str(err)) from err
        session._decision_pathway = cached
    return cached


def logit_lens(session) -> np.ndarray:
    """``[L]`` float32: the logit difference read after each layer at the answer position.

    Read from the clean run the session already cached (the residual stream entering
    every layer), the same readout as :func:`finwidget.analysis.logit_lens`
    (``lm_head(final_norm(h))`` as the task's logit difference; tests compare them),
    without a second forward pass. After the last layer it is the model's own output.
    """
    cached = getattr(session, "_logit_lens", None)
    if cached is not None:
        return cached
    import torch

    if session.cached is None:
        raise AnalysisUnavailable("the logit lens needs the model (this explorer shows recorded attention)")
    model, cached_run = session.model, session.cached
    norm = getattr(getattr(model, "model", None), "norm", None)
    if norm is None:
        raise AnalysisUnavailable(
            f"{type(model).__name__} has no model.norm (final norm) to read the logit lens with"
        )
    lm_head = model.get_output_embeddings()
    values = []
    with torch.inference_mode():
        for layer in range(1, session.num_layers):
            hidden = cached_run.residuals[layer][:, -1:, :]  # input of layer l = output of layer l-1
            logits = lm_head(norm(hidden))[:, -1, :]
            values.append(float(session.task.logit_diff(logits)[0]))
    values.append(float(cached_run.clean_logit_diff[0]))
    session._logit_lens = np.asarray(values, dtype=np.float32)
    return session._logit_lens


def direct_head_contributions(session) -> np.ndarray:
    """``[L, H]`` float32: each head's direct contribution to the logit difference."""
    heads = _pathway(session).heads
    heads = heads[heads["statement"] == 0]
    out = np.zeros((session.num_layers, session.num_heads), dtype=np.float32)
    out[heads["layer"].to_numpy(), heads["head"].to_numpy()] = heads["contribution"].to_numpy(
        dtype=np.float32
    )
    return out
