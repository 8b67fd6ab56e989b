"""Activation patching between a statement and its counterfactual, across token lengths.

``span_patching(model, task, cf)`` runs the original statement (clean) and the edited one
(corrupted: ``cf.text``), and patches the clean residual stream into the edited run one
group of aligned token positions at a time, at the input of every layer. The positions
correspond by ``cf.token_alignment`` (``finwidget.statement.token_alignment``):

- identical tokens (everything the edit left alone) pair 1:1, at their own positions in
  each prompt even when an earlier number changed length;
- a line item name pairs with the same name;
- a number whose tokens changed pairs sign with sign and digits right-aligned (units
  digit with units digit, tens with tens...): patching ``"+44"`` into ``"-1,051"`` writes
  the clean ``" +"``, ``"4"``, ``"4"`` over ``" -"``, ``"5"``, ``"1"``.
- what happens to the edited number's extra tokens (``"1"``, ``","``, ``"0"`` above) is
  ``unmatched``: ``"cover"`` (default) patches each with the clean residual of the
  nearest paired token of the same number (here the first ``"4"``), so the whole edited
  span is overwritten; ``"leave"`` keeps the edited run's own residual there (strict 1:1
  pairs only). On the demo model this matters in layer 1: the layer-0 head L0H1 has
  written the edited line's negative sign into every digit of that line, and digits left
  unpatched still carry it, so ``"leave"`` restores the answer at layer 0 but not at
  layer 1 when the edited number is longer (measured in
  ``tests/test_counterfactual_patching.py``). A clean number longer than the edited one
  has tokens with no place in the edited prompt; they are not patched in either mode.

Groups (``by``): ``"line"`` (one per statement line, named by its line item when it has
one; the template around the statement is left out), ``"segment"`` (one per aligned
segment: a name, a number, the text between) or ``"item"`` (each line item's name and
numbers). ``recovered`` is ``(patched - edited) / (original - edited)`` as in
``activation_patching``: 1 means the group carries the whole difference.
"""

from __future__ import annotations

from finwidget.errors import InputError
from finwidget.interventions.activation_patching import PatchingResult, activation_patching
from finwidget.statement.edits import CounterfactualStatement


def span_patching(model, task, counterfactual: CounterfactualStatement, *, by: str = "line", layers=None,
                  source: str = "original", unmatched: str = "cover") -> PatchingResult:
    """Patch aligned spans of one statement into the run of the other, per layer.

    Args:
        model: a Hugging Face causal LM.
        task: the ``EarningsTask``.
        counterfactual: a ``CounterfactualStatement`` (``finwidget.counterfactuals``).
        by: ``"line"``, ``"segment"`` or ``"item"`` (see the module docstring).
        layers: layers to patch at (default: all).
        source: ``"original"`` patches the original (clean) into the edited run (does the
            group restore the original answer?); ``"edited"`` the other way round.
        unmatched: ``"cover"`` or ``"leave"``: what a changed number's extra tokens get (see
            the module docstring).

    Returns:
        ``PatchingResult`` with ``over="residual"``, ``recovered [layers, groups]`` and
        ``columns`` the group names; ``clean_logit_diff`` is the source's run.
    """
    if not isinstance(counterfactual, CounterfactualStatement):
        raise InputError(f"span_patching needs a CounterfactualStatement (finwidget.counterfactual(...)), "
                         f"got {type(counterfactual).__name__}")
    if source not in ("original", "edited"):
        raise InputError(f"source must be 'original' or 'edited', got {source!r}")
    if unmatched not in ("cover", "leave"):
        raise InputError(f"unmatched must be 'cover' or 'leave', got {unmatched!r}")
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is None:
        raise InputError("span_patching needs an EarningsTask with its tokenizer")
    alignment = counterfactual.token_alignment(tokenizer, task)
    if source == "edited":  # the original prompt is now the one patched: align it as the "edited" side
        alignment = _reversed(alignment)
        clean, corrupted = counterfactual.text, counterfactual.original
    else:
        clean, corrupted = counterfactual.original, counterfactual.text
    groups = alignment.pairs_by(by, cover=unmatched == "cover")
    if not groups:
        raise InputError("no aligned token positions to patch (the alignment found no groups)")
    return activation_patching(model, task, clean, corrupted, layers=layers, position_pairs=groups)


def _reversed(alignment):
    """The same alignment seen from the edited prompt (edited <-> original swapped)."""
    from dataclasses import replace

    from finwidget.statement.token_alignment import TokenAlignment

    groups = tuple(replace(g, original_positions=g.edited_positions, edited_positions=g.original_positions,
                           pairs=tuple(sorted((b, a) for a, b in g.pairs))) for g in alignment.groups)
    return TokenAlignment(alignment.edited_ids, alignment.original_ids, groups)
