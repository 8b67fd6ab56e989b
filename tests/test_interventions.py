"""Interventions as values, and applying them: exact, batched, with padding and generation.

The reference for every fast path is a plain full forward of the model with the same
hooks applied (transformers' own code computing every layer and every position).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import full_forward_logit_diff, registered_hooks, same_shape_statement, single_thread, statement
from reference_drift import logit_diff_tolerance

from finwidget.errors import InputError, LocationError
from finwidget.interventions import (
    CachedRun,
    HeadIntervention,
    HeadOutputs,
    InterventionSet,
    summarize_sweep,
    sweep_heads,
)

EPS = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def exact(setup, texts):
    """Tolerance between two float32 paths to the logit difference (a cached re-run and a full
    forward, a batch and a statement alone), measured here: over these statements, twice a plain
    forward's largest distance from the float64 value plus two ulps of the logits
    (reference_drift.logit_diff_tolerance). 1.7e-7 to 9e-7 on the machines measured so far."""
    model, _, task = setup
    statements = texts + [statement(s) for s in (10, 11, 12, 13, 20, *range(30, 37))]
    batch = task.encode(statements)
    return float(logit_diff_tolerance(model, task, batch, full_forward_logit_diff(model, task, batch)).max())


one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

@pytest.fixture(scope="module")
def setup(tiny_setup):
    return tiny_setup()


@pytest.fixture(scope="module")
def texts():
    # different lengths -> left padding in the batch
    return [statement(1, lines=2), statement(2, lines=4), statement(3, lines=3)]


# ---------------------------------------------------------------- values
def test_sets_are_values_that_combine_compare_and_round_trip_json():
    a = InterventionSet([HeadIntervention(3, 1), (0, 2, "zero")])
    b = InterventionSet([(0, 2), HeadIntervention(3, 1, "zero")])
    assert a == b and hash(a) == hash(b)
    assert [iv.location for iv in a] == [(0, 2), (3, 1)]
    c = a.add(HeadIntervention(1, 0, "scale", value=2.5, positions=[-1, 4]))
    assert len(c) == 3 and len(a) == 2  # a is unchanged
    assert c.remove(1, 0) == a
    assert a.toggle(3, 1) == InterventionSet([(0, 2)])
    assert a.toggle(2, 2, "mean").get(2, 2).mode == "mean"
    assert (a | InterventionSet([(5, 5)])).layers == (0, 3, 5)
    assert c.first_layer == 0
    mixed = InterventionSet([
        HeadIntervention(1, 0, "scale", value=0.5, positions=(-1,)),
        HeadIntervention(2, 1, "constant", value=-3.0),
        HeadIntervention(0, 3, "mean", per_position=True),
        HeadIntervention(4, 0, "resample", positions=[2, 0, 2]),
    ])
    assert InterventionSet.from_json(mixed.to_json()) == mixed
    assert mixed.get(4, 0).positions == (0, 2)


@pytest.mark.parametrize("make, words", [
    (lambda: HeadIntervention(0, 0, "scale", value=float("nan")), "finite"),
    (lambda: HeadIntervention(0, 0, "scale", value=float("inf")), "finite"),
    (lambda: HeadIntervention(0, 0, "scale"), "needs value"),
    (lambda: HeadIntervention(0, 0, "banana"), "unknown intervention mode"),
    (lambda: HeadIntervention(-1, 0), "layer must be >= 0"),
    (lambda: HeadIntervention(0, 0, "zero", value=3.0), "takes no value"),
    (lambda: HeadIntervention(0, 0, positions=[]), "positions is empty"),
    (lambda: HeadIntervention(0, 0, "scale", value=2, per_position=True), "per_position"),
    (lambda: InterventionSet([(1, 2, "zero"), HeadIntervention(1, 2, "scale", value=2.0)]), "appears twice"),
    (lambda: InterventionSet.from_json('{"interventions": [{"layer": 1}]}'), "missing"),
    (lambda: InterventionSet.from_json("not json"), "not valid JSON"),
])
def test_bad_values_are_refused_with_a_clear_message(make, words):
    with pytest.raises((InputError, LocationError), match=words):
        make()


def test_out_of_range_heads_are_refused_before_touching_the_model(setup, texts):
    model, _, task = setup
    hooks = registered_hooks(model)
    for bad, words in [((4, 0), "layer 4 is out of range"), ((0, 4), "head 4 of layer 0 is out of range")]:
        with pytest.raises(LocationError, match=words), InterventionSet([bad]).applied(model):
            pass
        with pytest.raises(LocationError, match=words):
            CachedRun(model, task, texts).predict(InterventionSet([bad]))
    assert registered_hooks(model) == hooks


# ---------------------------------------------------------------- exactness
def _sets():
    return [
        InterventionSet([(3, 1)]),
        InterventionSet([(0, 2)]),
        InterventionSet([(1, 0), (3, 3, "zero")]),
        InterventionSet([HeadIntervention(2, 3, "scale", value=3.0)]),
        InterventionSet([HeadIntervention(1, 1, "constant", value=0.7)]),
        InterventionSet([HeadIntervention(0, 1, "zero", positions=(-1, -4, 7))]),
        InterventionSet([HeadIntervention(2, 0, "mean")]),
        InterventionSet([HeadIntervention(1, 2, "mean"), HeadIntervention(3, 0, "scale", value=-1.0)]),
    ]


def test_cached_run_equals_a_full_forward_with_the_same_interventions(setup, texts, exact):
    model, _, task = setup
    batch = task.encode(texts)
    reference = task.encode([statement(s) for s in (10, 11, 12, 13)])
    run = CachedRun(model, task, texts)
    clean_full = full_forward_logit_diff(model, task, batch)
    assert (run.clean_logit_diff - clean_full).abs().max() < exact
    changed = 0
    for interventions in _sets():
        fast = run.logit_diffs([interventions], reference=reference)[0]
        with interventions.applied(model, reference=reference):
            full = full_forward_logit_diff(model, task, batch)
        assert (fast - full).abs().max() < exact, interventions
        changed += int((full - clean_full).abs().max() > 1e-3)
    assert changed == len(_sets())  # every set really changes the answer: the comparisons are not vacuous


def test_last_layer_interventions_at_chosen_positions(setup, texts, exact):
    """The last layer is re-run for the answer position only: its interventions must still be exact."""
    model, _, task = setup
    batch = task.encode(texts)
    run = CachedRun(model, task, texts)
    same_length = [same_shape_statement(texts[2], seed) for seed in (4, 5)]
    cases = [
        (InterventionSet([HeadIntervention(3, 2, "zero", positions=(-1,))]), True),
        (InterventionSet([HeadIntervention(3, 1, "scale", value=5.0, positions=(4, 30))]), False),
        (InterventionSet([HeadIntervention(2, 1, "scale", value=5.0, positions=(4, 30)), (3, 0)]), True),
    ]
    for interventions, changes_answer in cases:
        fast = run.logit_diffs([interventions])[0]
        with interventions.applied(model):
            full = full_forward_logit_diff(model, task, batch)
        assert (fast - full).abs().max() < exact, interventions
        assert bool((full - run.clean_logit_diff).abs().max() > exact) == changes_answer
    per_position = InterventionSet([HeadIntervention(3, 3, "mean", per_position=True)])
    target = same_shape_statement(texts[2], 6)
    fast = CachedRun(model, task, target).logit_diffs([per_position], reference=same_length)[0]
    with per_position.applied(model, reference=task.encode(same_length)):
        full = full_forward_logit_diff(model, task, task.encode(target))
    assert (fast - full).abs().max() < exact
    with pytest.raises(InputError, match="same token length"):
        run.predict(per_position, reference=same_length)
    with pytest.raises(InputError, match="same token length"):
        CachedRun(model, task, texts[0]).predict(InterventionSet([HeadIntervention(3, 0, "resample")]),
                                                 source=texts[1])


def test_effects_report_the_answer_next_to_the_clean_one(setup, texts):
    model, _, task = setup
    run = CachedRun(model, task, texts)
    interventions = InterventionSet([(0, 2), HeadIntervention(2, 3, "scale", value=-2.0)])
    frame = run.effects(interventions)
    assert list(frame.columns) == ["statement", "logit_diff", "p_increase", "label", "clean_logit_diff",
                                   "clean_label", "change", "flipped"]
    predictions = run.predict(interventions)
    assert frame.logit_diff.tolist() == [p.logit_diff for p in predictions]
    assert ((frame.logit_diff - frame.clean_logit_diff - frame.change).abs() < 1e-9).all()
    assert (frame.flipped == (frame.label != frame.clean_label)).all()
    # float32 sigmoid of a float32 value vs float64: a few ulps of 1.0
    assert (frame.p_increase.sub(1 / (1 + np.exp(-frame.logit_diff))).abs() < 4 * EPS).all()


def test_one_batched_call_equals_one_call_per_set(setup, texts, exact):
    model, _, task = setup
    run = CachedRun(model, task, texts)
    sets = [InterventionSet([(layer, head)]) for layer in range(4) for head in range(4)] + _sets()[:6]
    one_by_one = run.logit_diffs(sets, reference=texts, max_batch_tokens=0)
    batched = run.logit_diffs(sets, reference=texts, max_batch_tokens=10**9)
    assert (one_by_one - batched).abs().max() < exact
    lean = CachedRun(model, task, texts, cache_head_outputs=False)  # whole layers from the residual only
    assert all(h is None for h in lean.head_outputs)
    assert (lean.logit_diffs(sets, reference=texts, max_batch_tokens=10**9) - one_by_one).abs().max() < exact


def test_left_padding_does_not_change_a_statements_answer(setup, texts, exact):
    model, _, task = setup
    interventions = InterventionSet([(1, 3), HeadIntervention(2, 2, "scale", value=2.0)])
    together = CachedRun(model, task, texts).predict(interventions)
    for text, prediction in zip(texts, together):
        alone = CachedRun(model, task, text).predict(interventions)[0]
        assert abs(alone.logit_diff - prediction.logit_diff) < exact
        assert alone.n_tokens == prediction.n_tokens


def test_zeroing_a_head_equals_zeroing_its_o_proj_columns(setup, texts, exact):
    """Independent check of the head slice: o_proj(z with head h zeroed) == o_proj with columns h*d:(h+1)*d zeroed."""
    model, _, task = setup
    layer, head = 2, 1
    d = model.config.hidden_size // model.config.num_attention_heads
    batch = task.encode(texts)
    with InterventionSet([(layer, head)]).applied(model):
        hooked = full_forward_logit_diff(model, task, batch)
    o_proj = model.model.layers[layer].self_attn.o_proj
    saved = o_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            o_proj.weight[:, head * d:(head + 1) * d] = 0
        edited = full_forward_logit_diff(model, task, batch)
    finally:
        with torch.no_grad():
            o_proj.weight.copy_(saved)
    assert (hooked - edited).abs().max() < exact


def test_resample_takes_another_statements_head_output(setup, exact):
    model, _, task = setup
    target = statement(20, lines=3)
    source = same_shape_statement(target, seed=1)
    assert task.encode(target)["input_ids"].shape == task.encode(source)["input_ids"].shape
    every_head = InterventionSet([HeadIntervention(0, h, "resample") for h in range(4)])
    run = CachedRun(model, task, target)
    source_outputs = HeadOutputs.record(model, task.encode(source))
    fast = run.logit_diffs([every_head], source=source_outputs)[0]
    with every_head.applied(model, source=task.encode(source)):
        full = full_forward_logit_diff(model, task, task.encode(target))
    assert (fast - full).abs().max() < exact
    with pytest.raises(InputError, match="same token length"):
        run.predict(every_head, source=statement(22, lines=2))


def test_mean_reference_must_be_given_and_not_empty(setup, texts, exact):
    model, _, task = setup
    run = CachedRun(model, task, texts)
    mean = InterventionSet([HeadIntervention(1, 1, "mean")])
    with pytest.raises(InputError, match="needs reference"):
        run.predict(mean)
    with pytest.raises(InputError, match="empty"):
        run.predict(mean, reference=[])
    with pytest.raises(InputError, match="empty"), mean.applied(model, reference=[]):
        pass
    with pytest.raises(InputError, match="encode it first"), mean.applied(model, reference=texts):
        pass
    per_position = InterventionSet([HeadIntervention(1, 1, "mean", per_position=True)])
    with pytest.raises(InputError, match="one token length|same token length"):
        run.predict(per_position, reference=texts)
    same_length = [same_shape_statement(texts[2], seed) for seed in (1, 2)]
    with pytest.raises(InputError, match="same token length"):
        CachedRun(model, task, texts[0]).predict(per_position, reference=same_length)
    target = same_shape_statement(texts[2], 3)
    fast = CachedRun(model, task, target).logit_diffs([per_position], reference=same_length)[0]
    with per_position.applied(model, reference=task.encode(same_length)):
        full = full_forward_logit_diff(model, task, task.encode(target))
    assert (fast - full).abs().max() < exact


def test_positions_outside_the_statement_are_refused(setup, texts):
    model, _, task = setup
    run = CachedRun(model, task, texts)
    with pytest.raises(LocationError, match="outside"):
        run.predict(InterventionSet([HeadIntervention(0, 0, positions=[run.seq_len])]))


# ---------------------------------------------------------------- generation
def _greedy_without_cache(model, input_ids, steps):
    ids = input_ids
    for _ in range(steps):
        with torch.inference_mode():
            next_id = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


@pytest.mark.parametrize("interventions", [
    InterventionSet([(1, 2), HeadIntervention(3, 0, "scale", value=4.0)]),
    InterventionSet([HeadIntervention(0, 1, "zero", positions=(3, 5)), HeadIntervention(2, 2, "constant", value=1.5)]),
])
def test_interventions_hold_during_generate_prefill_and_decode(setup, interventions):
    """generate (with its KV cache, one token per step) == greedy decoding by full forwards."""
    model, _, task = setup
    input_ids = task.encode(statement(5))["input_ids"]
    with interventions.applied(model):
        generated = model.generate(input_ids, max_new_tokens=6, do_sample=False)
        expected = _greedy_without_cache(model, input_ids, 6)
    clean = model.generate(input_ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, expected)
    assert not torch.equal(generated, clean)  # the intervention changed what is generated


# ---------------------------------------------------------------- sweeps
def test_sweep_covers_every_head_and_matches_full_forwards(setup, texts, exact):
    model, _, task = setup
    table = sweep_heads(model, task, texts[:2], progress=False)
    assert list(table.columns) == ["layer", "head", "mode", "logit_diff", "clean_logit_diff", "change",
                                   "flipped", "statement"]
    assert len(table) == 4 * 4 * 2
    batch = task.encode(texts[:2])
    for _, row in table.sample(6, random_state=0).iterrows():
        with InterventionSet([(int(row["layer"]), int(row["head"]))]).applied(model):
            full = full_forward_logit_diff(model, task, batch)[int(row["statement"])]
        assert abs(float(full) - row["logit_diff"]) < exact
    assert ((table.logit_diff - table.clean_logit_diff - table.change).abs() < 1e-9).all()
    assert (table.flipped == ((table.logit_diff > 0) != (table.clean_logit_diff > 0))).all()
    summary = summarize_sweep(table)
    assert len(summary) == 16 and summary.mean_abs_change.is_monotonic_decreasing


def test_sweep_of_chosen_heads_on_one_statement(setup, texts, exact):
    model, _, task = setup
    table = sweep_heads(model, task, texts[0], heads=[(3, 1), (0, 0)], mode="scale", value=0.0, progress=False)
    zero = sweep_heads(model, task, texts[0], heads=[(3, 1), (0, 0)], progress=False)
    assert list(table[["layer", "head"]].itertuples(index=False, name=None)) == [(3, 1), (0, 0)]
    assert "statement" not in table.columns
    assert (table.logit_diff - zero.logit_diff).abs().max() < exact  # scaling by 0 is zeroing
    with pytest.raises(LocationError):
        sweep_heads(model, task, texts[0], heads=[(9, 0)], progress=False)


def test_statements_in_more_than_one_batch(setup, exact):
    model, _, task = setup
    many = [statement(s) for s in range(30, 37)]
    table = sweep_heads(model, task, many, heads=[(2, 1), (3, 2)], batch_size=3, progress=False)
    assert sorted(table.statement.unique()) == list(range(7))
    single = sweep_heads(model, task, many[5], heads=[(2, 1), (3, 2)], progress=False)
    mine = table[table.statement == 5].reset_index(drop=True)
    assert (mine.logit_diff - single.logit_diff).abs().max() < exact


# ---------------------------------------------------------------- accelerate
def test_accelerate_dispatched_model_gives_the_same_results(texts, tiny_setup):
    from accelerate import dispatch_model

    model, _, task = tiny_setup(seed=3)
    interventions = InterventionSet([(1, 1), HeadIntervention(2, 3, "scale", value=2.0)])
    batch = task.encode(texts)
    with interventions.applied(model):
        plain = full_forward_logit_diff(model, task, batch)
    fast_plain = CachedRun(model, task, texts).logit_diffs([interventions])[0]
    # accelerate's hooks only move tensors (all on the CPU here), but memory layout can change the
    # kernels' blocking: within this model's measured float32 drift (see the exact fixture)
    tolerance = float(logit_diff_tolerance(model, task, batch, full_forward_logit_diff(model, task, batch)).max())
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": "cpu" for i in range(4)})
    dispatched = dispatch_model(model, device_map=device_map, force_hooks=True)
    assert hasattr(dispatched.model.layers[0], "_hf_hook")
    with interventions.applied(dispatched):
        hooked = full_forward_logit_diff(dispatched, task, batch)
    fast = CachedRun(dispatched, task, texts).logit_diffs([interventions])[0]
    assert (hooked - plain).abs().max() < tolerance
    assert (fast - fast_plain).abs().max() < tolerance
