"""First-order estimates of an ablation click, shown while the exact re-run is computed.

When a head is toggled in the explorer, the exact answer needs the model (re-running the
layers after the head: about a second on a CPU for Qwen2-7B's geometry at 1,000 tokens).
The estimate is attribution patching's (:mod:`~finwidget.interventions.attribution`):
the gradient of the logit difference with respect to every head's output, computed once
per statement (:func:`~finwidget.interventions.layer_gradients.head_gradient_sums`, one
forward and one backward pass, layer by layer, resumable), makes the first-order change
of any head's ablation a dot product:

    change(h) = sum_t grad_z LD[t] . (z'_h[t] - z_h[t])

For a set of ablations the estimate starts from the nearest set whose exact answer is
known (the clean run, or an earlier click's exact reply: fewest heads differ) and adds
the first-order change of each head that differs: ``+ change(h, new mode)`` for a head
ablated now, ``- change(h, old mode)`` for a head restored (the gradients are the clean
run's, so this is first order around the clean run, anchored on an exact value).

Exactness: for one head ablated from the clean run, the estimate is attribution
patching's ``estimated_change`` for that head (tests compare them).
"""

from __future__ import annotations

import json
import math

from finwidget.errors import InputError
from finwidget.interventions.layer_gradients import HeadGradientSums, affine_form, head_gradient_sums


class EstimateUnavailable(InputError):
    """No first-order estimate for this set (gradients not computed yet, or a mode the
    estimate cannot express); the exact answer is still computed."""


def _head_key(ablation: dict) -> tuple[int, int]:
    return int(ablation["layer"]), int(ablation["head"])


class ClickEstimates:
    """The gradients of one statement's clean run (a :class:`~finwidget.widgets.session.ModelSession`),
    computed on demand and kept, and the estimates made from them.

    ``prepare(should_stop)`` runs the layer-by-layer backward pass (needs the model: the
    caller holds the explorer's model lock); a stop between layers keeps what was done
    and the next ``prepare`` resumes there. ``estimate(ablations, exact)`` is arithmetic
    on kept sums only (no model): safe on the kernel's thread while a worker runs the model.
    """

    def __init__(self, session):
        self.session = session
        self.sums: HeadGradientSums | None = None
        self._partial: dict = {}
        self._changes: dict[str, float] = {}
        self.failure = ""  # why the last background gradient pass failed ("" if it did not)

    @property
    def ready(self) -> bool:
        return self.sums is not None

    def prepare(self, should_stop=None) -> HeadGradientSums:
        if self.sums is None:
            self.sums = head_gradient_sums(self.session.cached, should_stop=should_stop, state=self._partial)
            self._partial, self.failure = {}, ""
        return self.sums

    def _not_ready(self) -> EstimateUnavailable:
        if self.failure:
            return EstimateUnavailable(f"no estimate: computing the gradients failed ({self.failure})")
        return EstimateUnavailable("no estimate yet: the gradients of this statement are being computed")

    def head_change(self, ablation: dict) -> float:
        """First-order change of the logit difference when this one head is ablated alone."""
        from finwidget.interventions.modes import mode_named

        if self.sums is None:
            raise self._not_ready()
        key = json.dumps(ablation, sort_keys=True)
        if key not in self._changes:
            layer, head = _head_key(ablation)
            mode = mode_named(ablation["mode"])
            value = ablation.get("value")
            if mode.takes_value and value is None:
                from finwidget.widgets.session import _mode_value_or_default

                value = _mode_value_or_default(mode.name, value)
            sums = self.sums
            part = sums.head_slice(head)
            recorded = None
            if mode.needs_reference:
                recorded = mode.recorded(self.session.reference_set.require(), layer)
                recorded = recorded[..., part] if recorded is not None else None
            form = affine_form(mode, value, recorded, sums.head_dim)
            if form is None:
                raise EstimateUnavailable(f"no first-order estimate for the {mode.name} mode")
            a, b = form
            change = float(((a - 1.0) * sums.gradient_dot_output[layer, part]).sum()
                           + (b * sums.gradient_sum[layer, part]).sum())
            self._changes[key] = change
        return self._changes[key]

    def estimate(self, ablations: list[dict], exact: dict[str, dict]) -> dict:
        """``{"logit_diff", "base", "base_logit_diff", "heads_estimated"}``: the estimated
        logit difference of ``ablations``, from the nearest set in ``exact`` (ablation-list
        JSON -> the session's prediction dict) plus the first-order change of each head
        that differs."""
        if self.sums is None:
            raise self._not_ready()
        wanted = {_head_key(a): a for a in ablations}
        candidates = [([], self.sums.clean_logit_diff)]
        for key, result in exact.items():
            if result.get("ablated") is not None:
                candidates.append((json.loads(key), float(result["ablated"]["logit_diff"])))
        best = None
        for base, logit_diff in candidates:
            have = {_head_key(a): a for a in base}
            differs = [k for k in set(wanted) | set(have) if wanted.get(k) != have.get(k)]
            if best is None or len(differs) < len(best[2]):
                best = (base, logit_diff, differs, have)
        assert best is not None
        base, logit_diff, differs, have = best
        value = logit_diff
        for key in differs:
            if key in have:
                value -= self.head_change(have[key])
            if key in wanted:
                value += self.head_change(wanted[key])
        if not math.isfinite(value):
            raise EstimateUnavailable("the first-order estimate is not finite")
        return {"logit_diff": value, "base": base, "base_logit_diff": logit_diff, "heads_estimated": len(differs)}
