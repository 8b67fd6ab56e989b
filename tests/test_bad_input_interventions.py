"""Bad-input catalogue: interventions (values, sets, applying, CachedRun, sweeps, attribution,
activation patching). Each case names the finwidget error it must raise and checks that the
demo model is untouched afterwards (:mod:`bad_input_common`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bad_input_common import accepted, refused

from finwidget.demo import make_statements
from finwidget.errors import InputError, LocationError, LocationTypeError, NonFiniteError
from finwidget.interventions import (
    AttentionInterventions,
    CachedRun,
    HeadIntervention,
    HeadOutputs,
    InterventionSet,
    activation_patching,
    attribution_patching,
    sweep_heads,
)


@pytest.fixture(scope="module")
def texts(demo):
    """Two statements of different token lengths, shorter first (a left-padded batch pads the first)."""
    _, _, task = demo
    candidates = [s.text for s in make_statements(12, seed=3)]
    by_length = sorted(candidates, key=lambda t: task.encode(t)["input_ids"].shape[1])
    return by_length[0], by_length[-1]


@pytest.fixture(scope="module")
def run(demo, texts):
    model, _, task = demo
    return CachedRun(model, task, list(texts))


def logit_diffs(model, task, batch):
    with torch.inference_mode():
        return task.logit_diff(model(**batch).logits[:, -1]).float()


# ---------------------------------------------------------------- values refused at construction
VALUE_CASES = [
    ("float layer", lambda: HeadIntervention(0.0, 1), LocationTypeError),
    ("float head", lambda: HeadIntervention(0, 1.9), LocationTypeError),
    ("bool layer", lambda: HeadIntervention(True, 1), LocationTypeError),
    ("string head", lambda: HeadIntervention(0, "1"), LocationTypeError),
    ("None layer", lambda: HeadIntervention(None, 1), LocationTypeError),
    ("negative layer", lambda: HeadIntervention(-1, 0), LocationError),
    ("float position", lambda: HeadIntervention(0, 1, positions=[1.5]), LocationTypeError),
    ("string positions", lambda: HeadIntervention(0, 1, positions="5"), InputError),
    ("dict positions", lambda: HeadIntervention(0, 1, positions={"a": 1}), InputError),
    ("empty positions", lambda: HeadIntervention(0, 1, positions=[]), InputError),
    ("bool position", lambda: HeadIntervention(0, 1, positions=[True]), LocationTypeError),
    ("unknown mode", lambda: HeadIntervention(0, 1, "ablate"), InputError),
    ("mode as list", lambda: HeadIntervention(0, 1, ["zero"]), InputError),
    ("scale without value", lambda: HeadIntervention(0, 1, "scale"), InputError),
    ("NaN scale", lambda: HeadIntervention(0, 1, "scale", value=math.nan), InputError),
    ("inf constant", lambda: HeadIntervention(0, 1, "constant", value=math.inf), InputError),
    ("-inf scale", lambda: HeadIntervention(0, 1, "scale", value=-math.inf), InputError),
    ("int beyond float", lambda: HeadIntervention(0, 1, "scale", value=10**400), InputError),
    ("string value", lambda: HeadIntervention(0, 1, "scale", value="2"), InputError),
    ("bool value", lambda: HeadIntervention(0, 1, "scale", value=True), InputError),
    ("complex value", lambda: HeadIntervention(0, 1, "constant", value=1j), InputError),
    ("NaN numpy value", lambda: HeadIntervention(0, 1, "scale", value=np.float32("nan")), InputError),
    ("value on zero", lambda: HeadIntervention(0, 1, "zero", value=2.0), InputError),
    ("per_position on scale", lambda: HeadIntervention(0, 1, "scale", value=2.0, per_position=True), InputError),
    ("set of an int", lambda: InterventionSet(5), InputError),
    ("set of a string", lambda: InterventionSet("L0H1"), InputError),
    ("set of None items", lambda: InterventionSet([None]), InputError),
    ("same head twice", lambda: InterventionSet([(0, 1), HeadIntervention(0, 1, "scale", value=2.0)]), InputError),
    ("dict with unknown key", lambda: InterventionSet([{"layer": 0, "head": 1, "weight": 2}]), InputError),
    ("dict without head", lambda: InterventionSet([{"layer": 0}]), InputError),
    ("float pairs in ablating", lambda: InterventionSet.ablating([(0.7, 1.9)]), LocationTypeError),
    ("string pairs in ablating", lambda: InterventionSet.ablating([("0", "1")]), LocationTypeError),
    ("triple in ablating", lambda: InterventionSet.ablating([(0, 1, 2)]), InputError),
    ("ablating an int", lambda: InterventionSet.ablating(3), InputError),
    ("JSON with NaN value", lambda: InterventionSet.from_json(
        '{"interventions": [{"layer": 0, "head": 1, "mode": "scale", "value": NaN}]}'), InputError),
    ("JSON not a set", lambda: InterventionSet.from_json('{"layers": []}'), InputError),
    ("not JSON", lambda: InterventionSet.from_json("{"), InputError),
]


@pytest.mark.parametrize("name,make,error", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_intervention_values_are_refused(demo, name, make, error):
    model, _, _ = demo
    refused(model, error, make)


def test_integer_scalars_of_numpy_and_torch_are_accepted_everywhere(demo, texts):
    model, _, task = demo
    plain = InterventionSet([HeadIntervention(1, 2, "scale", value=0.5, positions=[3, -1])])
    for layer, head, position, value in [(np.int64(1), np.int32(2), np.int16(3), np.float32(0.5)),
                                         (torch.tensor(1), torch.tensor(2), torch.tensor(3), torch.tensor(0.5))]:
        same = InterventionSet([HeadIntervention(layer, head, "scale", value=value, positions=[position, -1])])
        assert same == plain
        assert InterventionSet.ablating([(layer, head)]) == InterventionSet.ablating([(1, 2)])
    batch = task.encode(texts[0])
    with plain.applied(model):
        expected = logit_diffs(model, task, batch)
    with InterventionSet([HeadIntervention(np.int64(1), np.int64(2), "scale", value=np.float64(0.5),
                                           positions=[np.int64(3), np.int64(-1)])]).applied(model):
        assert torch.equal(logit_diffs(model, task, batch), expected)


# ---------------------------------------------------------------- applying to a model
def _apply(model, task, interventions, text, **options):
    def call():
        with InterventionSet(interventions).applied(model, **options):
            logit_diffs(model, task, task.encode(text))
    return call


def test_out_of_range_layers_and_heads_are_refused_before_any_hook(demo, texts):
    model, _, task = demo
    for bad in [(2, 0), (0, 4), (99, 99)]:
        refused(model, LocationError, _apply(model, task, [bad], texts[0]), match="out of range")


@pytest.mark.parametrize("position", [10_000, -10_000])
def test_positions_outside_the_statement_are_refused_under_applied(demo, texts, position):
    model, _, task = demo
    refused(model, LocationError, _apply(model, task, [HeadIntervention(0, 1, positions=[position])], texts[0]),
            match="outside the statement")


def test_a_position_inside_the_longer_statement_but_outside_the_shorter_is_refused(demo, texts, run):
    model, _, task = demo
    short = int(task.encode(texts[0])["attention_mask"].sum())
    interventions = InterventionSet([HeadIntervention(0, 1, positions=[short])])
    refused(model, LocationError, _apply(model, task, interventions, list(texts)), match="statement 0")
    refused(model, LocationError, lambda: run.predict(interventions), match="statement 0")
    refused(model, LocationError, lambda: sweep_heads(model, task, list(texts), heads=[(0, 1)], progress=False)
            if False else run.logit_diffs([interventions]), match="statement 0")


@pytest.mark.parametrize("value", [1e39, -1e39, 1e300])
@pytest.mark.parametrize("mode", ["scale", "constant"])
def test_values_beyond_the_models_dtype_are_refused_before_any_model_work(demo, texts, run, value, mode):
    model, _, task = demo
    interventions = [HeadIntervention(0, 2, mode, value=value)]
    refused(model, InputError, _apply(model, task, interventions, texts[0]), match="beyond the largest float32")
    refused(model, InputError, lambda: run.predict(interventions), match="beyond the largest float32")
    refused(model, InputError, lambda: sweep_heads(model, task, texts[0], mode=mode, value=value, progress=False),
            match="beyond the largest float32")
    refused(model, InputError, lambda: attribution_patching(model, task, texts[0], mode=mode, value=value),
            match="beyond the largest float32")


@pytest.mark.parametrize("value", [1e20, 1e30, 1e35, 3e38])
def test_a_value_that_overflows_later_gives_no_answer_but_an_error_naming_it(demo, texts, run, value):
    """A float32 value whose edited head output is too large for the next norm to square: the norm's
    mean square is infinite, the normed stream 0, every logit 0. Before: logit_diff exactly 0.0
    (label 'decrease', a 'flip' in a sweep) for 1e20..1e35, NaN for 3e38; no error."""
    model, _, task = demo
    interventions = InterventionSet([HeadIntervention(0, 2, "scale", value=value)])
    error = refused(model, NonFiniteError, lambda: run.predict(interventions), match="too large|not finite")
    assert f"L0H2 scale x{value:g}" in str(error)
    refused(model, NonFiniteError, lambda: run.effects(interventions))
    refused(model, NonFiniteError, lambda: sweep_heads(model, task, texts[0], mode="scale", value=value,
                                                       heads=[(0, 2)], progress=False))

    def predict_under_applied():
        batch = task.encode(texts[0])
        with interventions.applied(model):
            task.predictions(task.answer_logits(model, batch), batch["attention_mask"])

    refused(model, NonFiniteError, predict_under_applied)


def test_non_finite_logits_never_become_a_label(demo):
    _, _, task = demo
    logits = torch.zeros(3, 425)
    logits[1, task.answer_token_ids[0]] = math.nan
    logits[2, task.answer_token_ids[1]] = math.inf
    with pytest.raises(NonFiniteError, match=r"statements \[1, 2\]"):
        task.predictions(logits, torch.ones(3, 4))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_attribution_patching_refuses_non_finite_values(demo, texts, value):
    model, _, task = demo
    refused(model, InputError, lambda: attribution_patching(model, task, texts[0], mode="scale", value=value),
            match="finite")


def test_a_mean_reference_without_tokens_is_refused(demo, texts):
    model, _, task = demo
    batch = task.encode(list(texts))
    empty = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].clone()}
    empty["attention_mask"][0] = 0
    mean = [HeadIntervention(0, 1, "mean")]
    refused(model, InputError, _apply(model, task, mean, texts[0], reference=empty), match="all zeros")
    refused(model, InputError, lambda: CachedRun(model, task, texts[0]).predict(mean, reference=empty),
            match="all zeros")
    refused(model, InputError, lambda: attribution_patching(model, task, texts[0], mode="mean", reference=empty),
            match="all zeros")
    outputs = HeadOutputs.record(model, task.encode(texts[0]))
    no_tokens = HeadOutputs(per_layer=outputs.per_layer, attention_mask=torch.zeros_like(outputs.attention_mask))
    refused(model, InputError, _apply(model, task, mean, texts[0], reference=no_tokens), match="all zeros")


def _guide(model, task, method, *args, **kwargs):
    """Call one of the guide API's methods on a fresh AttentionInterventions, closed afterwards (it
    keeps a prompt-memory hook while it lives)."""
    with AttentionInterventions(model, task.tokenizer) as guide:
        return getattr(guide, method)(*args, **kwargs)


MISUSE_CASES = [
    ("mean without reference", lambda m, t, x, r: _apply(m, t, [HeadIntervention(0, 1, "mean")], x[0])(),
     InputError, "needs reference"),
    ("resample without source", lambda m, t, x, r: _apply(m, t, [HeadIntervention(0, 1, "resample")], x[0])(),
     InputError, "needs source"),
    ("resample source of another length", lambda m, t, x, r: _apply(
        m, t, [HeadIntervention(0, 1, "resample")], x[0], source=t.encode(x[1]))(), InputError, "token"),
    ("reference as text", lambda m, t, x, r: _apply(m, t, [HeadIntervention(0, 1, "mean")], x[0],
                                                    reference=[x[1]])(), InputError, "as text"),
    ("reference without tokens", lambda m, t, x, r: _apply(m, t, [HeadIntervention(0, 1, "mean")], x[0],
                                                         reference=torch.zeros(1, 0, dtype=torch.long))(), InputError, "0 tokens"),
    ("reference as a number", lambda m, t, x, r: _apply(m, t, [HeadIntervention(0, 1, "mean")], x[0],
                                                        reference=3)(), InputError, "encoded batch"),
    ("mask shape mismatch", lambda m, t, x, r: _apply(m, t, [HeadIntervention(0, 1, "mean")], x[0], reference={
        "input_ids": torch.ones(1, 5, dtype=torch.long), "attention_mask": torch.ones(1, 4)})(), InputError, "match"),
    ("logit_diffs of one set", lambda m, t, x, r: r.logit_diffs(InterventionSet([(0, 1)])), InputError, "list"),
    ("predict with a string set", lambda m, t, x, r: r.predict("L0H1"), InputError, "InterventionSet"),
    ("CachedRun of an empty list", lambda m, t, x, r: CachedRun(m, t, []), InputError, "empty"),
    ("CachedRun of a number", lambda m, t, x, r: CachedRun(m, t, 7), InputError, "encoded batch"),
    ("CachedRun of an empty statement", lambda m, t, x, r: CachedRun(m, t, "   "), InputError, "empty"),
    ("sweep with a float head", lambda m, t, x, r: sweep_heads(m, t, x[0], heads=[(0, 1.0)], progress=False),
     LocationTypeError, "head must be an int"),
    ("sweep with a bad pair", lambda m, t, x, r: sweep_heads(m, t, x[0], heads=[3], progress=False),
     InputError, "pairs"),
    ("sweep with no heads", lambda m, t, x, r: sweep_heads(m, t, x[0], heads=[], progress=False),
     InputError, "empty"),
    ("sweep with resample", lambda m, t, x, r: sweep_heads(m, t, x[0], mode="resample", progress=False),
     InputError, "resample"),
    ("sweep with batch_size 0", lambda m, t, x, r: sweep_heads(m, t, x[0], batch_size=0, progress=False),
     InputError, "batch_size"),
    ("sweep with NaN value", lambda m, t, x, r: sweep_heads(m, t, x[0], mode="scale", value=math.nan,
                                                            progress=False), InputError, "finite"),
    ("attribution with resample", lambda m, t, x, r: attribution_patching(m, t, x[0], mode="resample"),
     InputError, "corrupted"),
    ("attribution corrupted of another length", lambda m, t, x, r: attribution_patching(m, t, x[0], corrupted=x[1]),
     InputError, "same token lengths"),
    ("patching float position group", lambda m, t, x, r: activation_patching(
        m, t, x[0], x[0], position_groups={"a": [1.5]}), LocationTypeError, "position must be an int"),
    ("patching position outside", lambda m, t, x, r: activation_patching(
        m, t, x[0], x[0], position_groups={"a": [10_000]}), LocationError, "out of range"),
    ("patching empty group", lambda m, t, x, r: activation_patching(m, t, x[0], x[0], position_groups={"a": []}),
     InputError, "empty"),
    ("patching prompts of two lengths", lambda m, t, x, r: activation_patching(m, t, x[0], x[1]),
     InputError, "token length"),
    ("float token ids", lambda m, t, x, r: CachedRun(m, t, torch.tensor([[3.7, 5.2]])), InputError, "integer token ids"),
    ("token ids beyond the vocabulary", lambda m, t, x, r: CachedRun(m, t, torch.tensor([[3, 10_000]])),
     InputError, "vocabulary"),
    ("negative token ids", lambda m, t, x, r: HeadOutputs.record(m, torch.tensor([[-1, 3]])), InputError, "vocabulary"),
    ("guide: float ids", lambda m, t, x, r: _guide(m, t, "ablate_attention_head",
        1, 0, torch.tensor([[3.0, 4.0]]), max_new_tokens=1), InputError, "integer token ids"),
    ("guide: ids beyond the vocabulary", lambda m, t, x, r: _guide(m, t, "ablate_attention_head",
        1, 0, torch.tensor([[3, 10_000]]), max_new_tokens=1), InputError, "vocabulary"),
    ("guide: specs None", lambda m, t, x, r: _guide(m, t, "test_causal_intervention",
        "Revenue: 5", None, max_new_tokens=1), InputError, "intervention_specs"),
    ("guide: a bad spec after a good one", lambda m, t, x, r: _guide(
        m, t, "test_causal_intervention", "Revenue: 5", [(1, 0, "ablate"), (1, 0, "delete")], max_new_tokens=1),
     InputError, "unknown intervention type"),
    ("guide: float layer", lambda m, t, x, r: _guide(m, t, "ablate_attention_head",
        1.0, 0, "Revenue: 5", max_new_tokens=1), LocationTypeError, "layer must be an int"),
]


@pytest.mark.parametrize("name,call,error,match", MISUSE_CASES, ids=[c[0] for c in MISUSE_CASES])
def test_misused_intervention_apis_are_refused(demo, texts, run, name, call, error, match):
    model, _, task = demo
    refused(model, error, lambda: call(model, task, texts, run), match=match)


# ---------------------------------------------------------------- positions mean one thing
def test_positions_are_statement_positions_in_a_left_padded_batch(demo, texts):
    """The issue's case: scale L0H2 by -2 at positions 5 and 6. Before, statement a alone moved
    (-10.669256 -> -10.669626 on the demo's statement) but inside [a, b] (a padded) it stayed at
    -10.669256: the edit landed on padding. Now it moves by the same amount alone and in the batch."""
    model, _, task = demo
    a, b = texts
    interventions = InterventionSet([HeadIntervention(0, 2, "scale", value=-2.0, positions=[5, 6])])
    alone, both = task.encode(a), task.encode([a, b])
    assert both["attention_mask"][0, 0] == 0  # a is padded in the batch
    clean_alone, clean_both = logit_diffs(model, task, alone), logit_diffs(model, task, both)
    with interventions.applied(model):
        edited_alone, edited_both = logit_diffs(model, task, alone), logit_diffs(model, task, both)
    fast_alone = CachedRun(model, task, a).logit_diffs([interventions])[0]
    fast_both = CachedRun(model, task, [a, b]).logit_diffs([interventions])[0]
    sweep = sweep_heads(model, task, [a, b], mode="scale", value=-2.0, heads=[(0, 2)], progress=False)
    # drift of padding measured on the clean runs (0 when the kernels give a padded row bit for bit)
    drift = float((clean_alone[0] - clean_both[0]).abs())
    effect = float(edited_alone[0] - clean_alone[0])
    bound = 4 * drift + 4 * torch.finfo(torch.float32).eps * abs(float(clean_alone[0]))
    assert abs(effect) > 20 * bound  # a real change, far above rounding: missing it cannot pass
    assert abs(float(edited_both[0] - clean_both[0]) - effect) <= bound
    assert abs(float(fast_both[0] - fast_alone[0])) <= bound + 4 * drift
    assert abs(float(fast_alone[0]) - float(edited_alone[0])) <= bound
    # positions 5, 6 of b are b's own tokens: the same as b alone
    clean_b = logit_diffs(model, task, task.encode(b))
    with interventions.applied(model):
        edited_b = logit_diffs(model, task, task.encode(b))
    assert abs(float(edited_both[1] - clean_both[1]) - float(edited_b[0] - clean_b[0])) <= bound
    # the sweep runs CachedRun's path: its rows are CachedRun's numbers for the same set
    whole_head = CachedRun(model, task, [a, b]).logit_diffs([InterventionSet([HeadIntervention(0, 2, "scale",
                                                                                              value=-2.0)])])[0]
    assert sweep["logit_diff"].tolist() == whole_head.double().tolist()


@pytest.mark.parametrize("positions", [[0], [-1], [2, -3]])
def test_every_mode_at_positions_edits_each_statement_as_it_would_alone(demo, texts, positions):
    """Same-path equality: each statement's change in a padded batch equals its change alone."""
    model, _, task = demo
    a, b = texts
    reference = task.encode(b)
    sets = [InterventionSet([HeadIntervention(1, 3, mode, value=value, positions=positions)])
            for mode, value in [("zero", None), ("constant", 0.5), ("scale", 3.0), ("mean", None)]]
    clean_both = logit_diffs(model, task, task.encode([a, b]))
    clean = [logit_diffs(model, task, task.encode(t))[0] for t in (a, b)]
    drift = float(max(abs(clean_both[0] - clean[0]), abs(clean_both[1] - clean[1])))
    for interventions in sets:
        with interventions.applied(model, reference=reference):
            both = logit_diffs(model, task, task.encode([a, b]))
            alone = [logit_diffs(model, task, task.encode(t))[0] for t in (a, b)]
        for row in range(2):
            bound = 4 * drift + 8 * torch.finfo(torch.float32).eps * abs(float(clean[row]))
            assert abs(float(both[row] - clean_both[row]) - float(alone[row] - clean[row])) <= bound, interventions


def test_generate_keeps_future_positions_and_refuses_negative_ones_outside(demo, texts):
    model, tokenizer, task = demo
    prompt = task.encode(texts[0])
    length = int(prompt["input_ids"].shape[1])
    future = InterventionSet([HeadIntervention(0, 1, positions=[length + 1])])

    def generate_on():
        with future.applied(model):
            return model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    out = accepted(model, generate_on)
    assert out.shape[1] == length + 3
    too_far_back = InterventionSet([HeadIntervention(0, 1, positions=[-length - 1])])

    def generate_back():
        with too_far_back.applied(model):
            model.generate(**prompt, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    refused(model, LocationError, generate_back, match="outside the statement")
