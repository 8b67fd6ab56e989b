"""The reference set the explorer's "mean" ablation averages over.

"mean" means in the explorer what it means in the Python API
(:class:`~finwidget.interventions.spec.HeadIntervention` with ``mode="mean"``): each
ablated head's output is replaced by its average over a *reference set* of statements.
For the shipped demo model the default set is the demo generator's statements (the
model card's ``make_statements(64, seed=8080)``); for any other model the user passes
one (``AttentionExplorer(..., reference=...)``), and without one "mean" is disabled
with the reason shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from finwidget.errors import InputError

#: the demo model's default reference set, as the model card's systematic results use it
DEMO_REFERENCE_COUNT = 64
DEMO_REFERENCE_SEED = 8080


@dataclass
class ReferenceSet:
    """What "mean" averages over.

    outputs: the reference statements' recorded ``o_proj`` inputs
        (:class:`~finwidget.interventions.head_outputs.HeadOutputs`, every layer), or None
        when there is no reference set (then "mean" is disabled).
    name: what the UI calls the set (e.g. "64 demo statements (seed 8080)").
    disabled_reason: why "mean" is disabled ("" when it is available).
    """

    outputs: object | None
    name: str
    disabled_reason: str = ""

    @property
    def available(self) -> bool:
        return self.outputs is not None

    def require(self) -> object:
        """The recorded outputs, or ``InputError`` saying why "mean" is unavailable."""
        if self.outputs is None:
            raise InputError(f"mean ablation is disabled: {self.disabled_reason}")
        return self.outputs

    def to_dict(self) -> dict:
        """The catalogue's ``reference`` entry: ``{available, name, disabled_reason}``."""
        return {"available": self.available, "name": self.name, "disabled_reason": self.disabled_reason}


def is_demo_model(model) -> bool:
    """Whether ``model`` was loaded from the shipped demo model's folder."""
    from pathlib import Path

    from finwidget.demo import MODEL_DIR

    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    try:
        return bool(name) and Path(name).expanduser().resolve() == Path(MODEL_DIR).resolve()
    except (OSError, RuntimeError):
        return False


def _describe(reference) -> str:
    from finwidget.interventions.cached_run import statement_texts

    texts = statement_texts(reference) if not isinstance(reference, dict) else None
    if isinstance(reference, str):
        return "1 statement you passed"
    if texts is not None:
        return f"{len(texts)} statements you passed"
    if isinstance(reference, dict) and "input_ids" in reference:
        return f"{int(reference['input_ids'].shape[0])} statements you passed (encoded)"
    return "the head outputs you passed"


def resolve_reference(model, task, reference=None) -> ReferenceSet:
    """The reference set of an explorer: ``reference`` (statements, demo ``Statement``
    objects, an encoded batch or recorded ``HeadOutputs``) if given, the demo generator's
    statements for the demo model, otherwise none (mean disabled).

    The reference's head outputs are recorded once, here (one forward pass over the set).
    """
    from finwidget.interventions.cached_run import encode_statements
    from finwidget.interventions.head_outputs import HeadOutputs
    from finwidget.task import model_device

    if reference is None:
        if not is_demo_model(model):
            return ReferenceSet(
                None,
                "no reference set",
                "this is not the demo model and no reference statements were given: pass "
                "AttentionExplorer(..., reference=[statements]) to average each head over them",
            )
        from finwidget.demo import make_statements

        reference = make_statements(DEMO_REFERENCE_COUNT, seed=DEMO_REFERENCE_SEED)
        name = f"{DEMO_REFERENCE_COUNT} demo statements (make_statements seed {DEMO_REFERENCE_SEED})"
    else:
        name = _describe(reference)
    if isinstance(reference, HeadOutputs):
        return ReferenceSet(reference, name)
    if isinstance(reference, (list, tuple)) and not reference:
        raise InputError("reference must hold at least one statement, got an empty list")
    batch = encode_statements(task, reference, model_device(model), "reference")
    return ReferenceSet(HeadOutputs.record(model, batch), name)
