"""A click's first-order estimate, its exact re-run in a worker thread, superseding and cancelling."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from finwidget.interventions.cancel import RunCancelled


@pytest.fixture
def explorer(demo, text):
    from finwidget.widgets import AttentionExplorer

    model, tokenizer, task = demo
    return AttentionExplorer(model, tokenizer, text, task=task)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _head_terms(outputs, gradients, layer, head, head_dim, replacement):
    """float64 ``g * (z' - z)`` of one head from attribution patching's own gradients."""
    part = slice(head * head_dim, (head + 1) * head_dim)
    z = outputs[layer][0, :, part].double()
    g = gradients[layer][0, :, part].double()
    return g * (replacement(z) - z)


@pytest.mark.parametrize("mode,value", [("zero", None), ("scale", 0.5), ("mean", None)])
def test_estimate_of_one_head_is_attribution_patchings_value(explorer, mode, value):
    from finwidget.interventions.attribution import attribution_patching, head_output_gradients

    session = explorer.session
    model, task = session.model, session.task
    reference = session.reference_set.require() if mode == "mean" else None
    table = attribution_patching(model, task, session.batch, mode=mode, value=value, reference=reference)
    explorer.prepare_estimates()
    assert _hooks(model) == 0
    outputs, gradients, _ = head_output_gradients(model, task, session.batch)
    head_dim = session.head_dim
    for row in table.itertuples():
        ablation = {"layer": int(row.layer), "head": int(row.head), "mode": mode}
        if value is not None:
            ablation["value"] = value
        got = session.estimate([ablation])
        assert got["estimate"]["base"] == [] and got["estimate"]["heads_estimated"] == 1
        change = got["ablated"]["logit_diff"] - got["clean"]["logit_diff"]
        # float64 sum of attribution patching's own terms: how far float32 summation drifts
        if mode == "mean":
            mean = reference.mean_over_tokens(row.layer)[row.head * head_dim:(row.head + 1) * head_dim].double()
            terms = _head_terms(outputs, gradients, row.layer, row.head, head_dim, lambda z, m=mean: m.expand_as(z))
        elif mode == "scale":
            terms = _head_terms(outputs, gradients, row.layer, row.head, head_dim, lambda z: z * value)
        else:
            terms = _head_terms(outputs, gradients, row.layer, row.head, head_dim, torch.zeros_like)
        exact_sum = float(terms.sum())
        drift = abs(row.estimated_change - exact_sum)
        bound = 4 * drift + 16 * np.finfo(np.float32).eps * float(terms.abs().sum())
        assert abs(change - row.estimated_change) <= bound, (ablation, change, row.estimated_change, bound)


def test_estimate_starts_from_the_nearest_exact_answer(explorer):
    session = explorer.session
    a = {"layer": 0, "head": 1, "mode": "zero"}
    b = {"layer": 1, "head": 2, "mode": "zero"}
    with pytest.raises(Exception, match="no estimate yet"):
        session.estimate([a])
    explorer.prepare_estimates()
    exact_a = session.prediction([a])["ablated"]["logit_diff"]
    got = session.estimate([a, b])
    assert got["estimate"]["base"] == [a]
    single_b = session.estimate([b])
    change_b = single_b["ablated"]["logit_diff"] - single_b["clean"]["logit_diff"]
    assert got["ablated"]["logit_diff"] == pytest.approx(exact_a + change_b, rel=0, abs=1e-12)
    # a set whose exact answer is known: the estimate is that answer, marked as exact
    known = session.estimate([a])
    assert known["estimate"] is None and known["ablated"]["logit_diff"] == exact_a


def test_estimate_request_says_why_there_is_none_yet_then_answers(explorer):
    ablations = [{"layer": 1, "head": 0, "mode": "zero"}]
    reply, _ = explorer.handle_request({"id": 1, "kind": "estimate_ablations", "ablations": ablations})
    assert reply["ok"] and reply["prediction"] is None and "no estimate yet" in reply["reason"]
    explorer.prepare_estimates()
    reply, _ = explorer.handle_request({"id": 2, "kind": "estimate_ablations", "ablations": ablations})
    assert reply["ok"] and reply["prediction"]["estimate"]["method"].startswith("first-order")
    exact, _ = explorer.handle_request({"id": 3, "kind": "set_ablations", "ablations": ablations})
    assert exact["ok"] and "estimate" not in exact["prediction"]
    reply, _ = explorer.handle_request({"id": 4, "kind": "estimate_ablations", "ablations": ablations})
    assert reply["prediction"]["estimate"] is None
    assert reply["prediction"]["ablated"] == exact["prediction"]["ablated"]


def test_a_cancelled_exact_run_leaves_no_hooks_and_keeps_nothing(explorer):
    session = explorer.session
    ablations = [{"layer": 0, "head": 0, "mode": "zero"}]
    with pytest.raises(RunCancelled):
        session.prediction(ablations, should_stop=lambda: True)
    assert _hooks(session.model) == 0
    assert not session.model.training
    from finwidget.widgets.session import ModelSession

    fresh = ModelSession(session.model, session.tokenizer, session.text, task=session.task)
    assert session.prediction(ablations) == fresh.prediction(ablations)


def _collecting_send():
    sent: list[dict] = []
    done = threading.Condition()

    def send(content, buffers=None):
        with done:
            sent.append(content)
            done.notify_all()

    def wait_for(message_id, timeout=60):
        with done:
            assert done.wait_for(lambda: any(m.get("id") == message_id and m.get("kind") == "reply" for m in sent),
                                 timeout), f"no reply to {message_id}"
        return next(m for m in sent if m.get("id") == message_id and m.get("kind") == "reply")

    return sent, send, wait_for


def test_a_newer_click_stops_the_older_exact_run_between_layers(explorer, monkeypatch):
    session = explorer.session
    _sent, send, wait_for = _collecting_send()
    explorer.send = send
    first = [{"layer": 0, "head": 0, "mode": "zero"}]
    second = [{"layer": 0, "head": 1, "mode": "zero"}]
    original = type(session.cached).resume
    calls = []

    def resume(self, *args, **kwargs):
        if not calls:  # the first click's run: the user clicks again while it runs
            calls.append("first")
            explorer._on_custom_message(explorer, {"id": 2, "kind": "set_ablations", "ablations": second}, [])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(session.cached), "resume", resume)
    try:
        explorer._on_custom_message(explorer, {"id": 1, "kind": "set_ablations", "ablations": first}, [])
        older = wait_for(1)
        newer = wait_for(2)
        explorer.model_worker.join(60)
    finally:
        del explorer.send
    assert not older["ok"] and "cancelled" in older["error"]
    assert newer["ok"] and newer["ablations"] == second
    assert explorer.ablations == second
    assert _hooks(session.model) == 0
    assert json_key(first) not in session._predictions  # the stopped run kept nothing
    from finwidget.widgets.session import ModelSession

    fresh = ModelSession(session.model, session.tokenizer, session.text, task=session.task)
    assert newer["prediction"]["ablated"] == pytest.approx(fresh.prediction(second)["ablated"])


def json_key(ablations):
    import json

    return json.dumps(ablations, sort_keys=True)


def test_a_click_waiting_for_the_model_gives_up_when_superseded(explorer):
    _sent, send, wait_for = _collecting_send()
    explorer.send = send
    try:
        with explorer.model_lock:  # another thread's run holds the model
            done = threading.Event()

            def clicks():
                explorer._on_custom_message(explorer, {"id": 5, "kind": "set_ablations",
                                                       "ablations": [{"layer": 1, "head": 1, "mode": "zero"}]}, [])
                explorer._on_custom_message(explorer, {"id": 6, "kind": "set_ablations",
                                                       "ablations": [{"layer": 1, "head": 2, "mode": "zero"}]}, [])
                done.set()

            threading.Thread(target=clicks).start()
            assert done.wait(30)
            older = wait_for(5)
        newer = wait_for(6)
        explorer.model_worker.join(60)
    finally:
        del explorer.send
    assert not older["ok"] and "superseded" in older["error"]
    assert newer["ok"]


def test_after_a_click_the_gradients_are_computed_in_the_background(explorer):
    _sent, send, wait_for = _collecting_send()
    explorer.send = send
    try:
        explorer._on_custom_message(explorer, {"id": 7, "kind": "set_ablations",
                                               "ablations": [{"layer": 1, "head": 1, "mode": "zero"}]}, [])
        assert wait_for(7)["ok"]
        explorer.model_worker.join(60)
    finally:
        del explorer.send
    assert explorer.session.estimates_ready
    assert _hooks(explorer.session.model) == 0


def test_a_cancelled_sweep_leaves_the_model_clean(explorer):
    _sent, send, wait_for = _collecting_send()
    explorer.send = send
    cancelled = threading.Event()

    def progress_then_cancel(content, buffers=None):
        send(content, buffers)
        if content.get("kind") == "progress" and not cancelled.is_set():
            cancelled.set()
            explorer._on_custom_message(explorer, {"id": 9, "kind": "cancel_sweep"}, [])

    explorer.send = progress_then_cancel
    try:
        explorer._on_custom_message(explorer, {"id": 8, "kind": "sweep", "mode": "zero"}, [])
        reply = wait_for(8)
        explorer.model_worker.join(60)
    finally:
        del explorer.send
    assert not reply["ok"] and "cancelled" in reply["error"]
    assert _hooks(explorer.session.model) == 0 and not explorer.sweeping
    assert explorer.model_lock.acquire(blocking=False)
    explorer.model_lock.release()


def test_a_model_reading_request_waits_while_the_background_gradient_pass_steps_aside(explorer, monkeypatch):
    import time

    from finwidget.interventions import layer_gradients
    from finwidget.widgets.session import ModelSession

    original = layer_gradients._layer_call
    started = threading.Event()

    def layer_call_that_waits(cached, hidden):
        call = original(cached, hidden)

        def wrapped(index, x):
            started.set()
            deadline = time.monotonic() + 30
            while not explorer.model_worker.model_wanted and time.monotonic() < deadline:
                time.sleep(0.005)  # the pass is "busy" until a request wants the model
            return call(index, x)

        return wrapped

    monkeypatch.setattr(layer_gradients, "_layer_call", layer_call_that_waits)
    background = threading.Thread(target=explorer.model_worker.prepare_estimates_in_background)
    background.start()
    assert started.wait(30)
    # direct contributions run the model (with hooks of their own): they wait for it
    reply, _ = explorer.handle_request({"id": 1, "kind": "grid", "measure": "direct_logit_diff"})
    background.join(30)
    assert reply["ok"], reply
    session = explorer.session
    assert not session.estimates_ready  # it stepped aside after a layer
    assert _hooks(session.model) == 0
    monkeypatch.setattr(layer_gradients, "_layer_call", original)
    explorer.prepare_estimates()  # resumes where it stopped
    fresh = ModelSession(session.model, session.tokenizer, session.text, task=session.task)
    fresh.prepare_estimates()
    assert torch.equal(session.click_estimates.sums.gradient_dot_output, fresh.click_estimates.sums.gradient_dot_output)
    assert torch.equal(session.click_estimates.sums.gradient_sum, fresh.click_estimates.sums.gradient_sum)
