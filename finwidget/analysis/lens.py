"""The logit lens read from residuals already cached, without another forward pass.

:func:`finwidget.analysis.logit_lens` runs the model once with hooks; a caller that
already holds the residual stream entering every layer (e.g.
:class:`~finwidget.interventions.cached_run.CachedRun.residuals`) reads the same lens
here: ``lm_head(final_norm(h))`` at the answer position, as the task's logit difference.
The input of layer ``l + 1`` is the output of layer ``l``; after the last layer the
reading is the model's own output, which the caller passes in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from finwidget.model_parts import final_norm, unembedding


def logit_lens_from_residuals(
    model, task, residuals: Sequence[torch.Tensor], final_logit_diff: float, row: int = 0
) -> np.ndarray:
    """``[L]`` float32: the logit difference read after each layer at the answer position.

    Args:
        model: the Hugging Face causal LM the residuals came from.
        task: its :class:`~finwidget.task.EarningsTask`.
        residuals: ``L`` tensors ``[B, T, D]``, the input of each layer (left-padded
            batch: the answer position is the last column).
        final_logit_diff: the model's own logit difference (the reading after the last layer).
        row: which statement of the batch.
    """
    norm = final_norm(model)
    lm_head = unembedding(model)
    values = []
    with torch.inference_mode():
        for hidden in list(residuals)[1:]:
            last = hidden[row : row + 1, -1:, :]  # [1, 1, D]
            logits = lm_head(norm(last))[:, -1, :]
            values.append(float(task.logit_diff(logits)[0]))
    values.append(float(final_logit_diff))
    return np.asarray(values, dtype=np.float32)
