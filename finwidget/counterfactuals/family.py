"""A family of counterfactuals run through the model: which single edits move the answer.

``family_effects(model, tokenizer, family)`` takes ``counterfactual_family(statement)`` (or
several statements' families joined) and adds, per counterfactual, the logit difference of
the original statement and of the edited one, both answers and whether the answer flipped:
the table the population layer's statistics take (one row per statement x item x kind).
"""

from __future__ import annotations

import numpy as np

from finwidget.counterfactuals.sensitivity import logit_diffs_by_length
from finwidget.errors import InputError
from finwidget.statement.edits import CounterfactualStatement, family_frame
from finwidget.task import EarningsTask


def family_effects(model, tokenizer, family, *, task=None, batch_size: int = 16):
    """``family_frame(family)`` plus ``statement`` (index of the original text, in order of first
    appearance), ``logit_diff_before``, ``logit_diff_after``, ``answer_before``, ``answer_after``,
    ``flipped`` and ``effect`` (after - before). Each distinct text runs once, in unpadded
    batches of equal token length (as ``sensitivity``)."""
    family = list(family)
    if not family or not all(isinstance(cf, CounterfactualStatement) for cf in family):
        raise InputError("family_effects needs a non-empty list of CounterfactualStatements "
                         "(finwidget.counterfactual_family(statement))")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    task = task if task is not None else EarningsTask(tokenizer)
    texts = list(dict.fromkeys([cf.original for cf in family] + [cf.text for cf in family]))
    diffs = dict(zip(texts, logit_diffs_by_length(model, task, texts, batch_size)))
    originals = list(dict.fromkeys(cf.original for cf in family))
    frame = family_frame(family)
    first, second = tuple(getattr(task, "labels", ("increase", "decrease")))[:2]
    before = np.array([diffs[cf.original] for cf in family])
    after = np.array([diffs[cf.text] for cf in family])
    frame.insert(0, "statement", [originals.index(cf.original) for cf in family])
    frame["logit_diff_before"] = before
    frame["logit_diff_after"] = after
    frame["answer_before"] = np.where(before > 0, first, second)
    frame["answer_after"] = np.where(after > 0, first, second)
    frame["flipped"] = frame["answer_before"] != frame["answer_after"]
    frame["effect"] = after - before
    return frame
