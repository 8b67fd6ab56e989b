"""The explorer on the demo model: attention under ablations (clean / ablated /
difference), "mean" over the same reference set as the Python API, several statements
and the sweep over them (mean |change|, flip rate), and stopping a sweep."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import Qwen2ForCausalLM

import finwidget
from finwidget.demo import make_statements
from finwidget.interventions.spec import HeadIntervention, InterventionSet
from finwidget.interventions.statement_sweep import SweepCancelled
from finwidget.interventions.sweep import summarize_sweep, sweep_heads
from finwidget.task import EarningsTask
from finwidget.widgets import AttentionExplorer
from finwidget.widgets.protocol import decode_array, requests_for_state
from finwidget.widgets.reference import DEMO_REFERENCE_COUNT, DEMO_REFERENCE_SEED

# The model card: zero- or mean-ablating layer 0 head 1 breaks every "increase" answer.
KEY_HEAD = (0, 1)


@pytest.fixture(scope="module")
def demo():
    return finwidget.load_demo_model()


@pytest.fixture(scope="module")
def statements():
    # seed 3: the first statement is an "increase" one (both rule items up)
    return make_statements(3, seed=3)


@pytest.fixture(scope="module")
def explorer(demo, statements):
    model, tokenizer = demo
    return AttentionExplorer(model, tokenizer, statements)


def ask(explorer, **message):
    reply, buffers = explorer.handle_request({"id": 1, **message})
    assert reply["ok"], reply.get("error")
    return reply, buffers


def matrix(explorer, layer, head, **run):
    reply, buffers = ask(explorer, kind="head_matrix", layer=layer, head=head, encoding="f16", **run)
    return decode_array(reply["arrays"]["matrix"], buffers), reply


def eager_twin(model):
    # a copy of the config: building the twin must not switch the demo model itself to eager
    twin = Qwen2ForCausalLM._from_config(copy.deepcopy(model.config), attn_implementation="eager").eval()
    twin.load_state_dict(model.state_dict())
    return twin


# ---------------------------------------------------------------------------- honest ablated views
def test_the_ablated_run_of_a_head_that_matters_changes_a_later_layers_attention(explorer, demo):
    model, _ = demo
    explorer.statement_index = 0
    ablations = [{"layer": KEY_HEAD[0], "head": KEY_HEAD[1], "mode": "zero"}]
    clean, clean_reply = matrix(explorer, 1, 0)
    ablated, reply = matrix(explorer, 1, 0, run="ablated", ablations=ablations)
    diff, diff_reply = matrix(explorer, 1, 0, run="difference", ablations=ablations)
    assert clean_reply["run"] == "clean" and clean_reply["run_label"] == "clean run"
    assert reply["run_label"] == "ablated run (L0H1 zero)"
    assert diff_reply["run_label"] == "difference: ablated (L0H1 zero) minus clean"

    # Independent check: eager attention (output_attentions) of the same weights with the
    # same intervention hooks. Tolerance: the drift between the capture and eager attention
    # measured on the clean run in this test.
    batch = explorer.session.batch
    twin = eager_twin(model)
    with torch.no_grad():
        eager_clean = twin(**batch, output_attentions=True).attentions[1][0, 0].numpy()
        with InterventionSet([HeadIntervention(*KEY_HEAD, "zero")]).applied(twin):
            eager_ablated = twin(**batch, output_attentions=True).attentions[1][0, 0].numpy()
    exact_clean = explorer.session.head_matrix(1, 0)
    exact_ablated = explorer.session.ablated_view(ablations).head_matrix(1, 0)
    drift = float(np.abs(exact_clean - eager_clean).max())
    tolerance = 2 * drift + 8 * np.finfo(np.float32).eps
    assert float(np.abs(exact_ablated - eager_ablated).max()) <= tolerance

    # The ablation moves the layer-1 head's attention at the answer position by far more than that.
    answer_row_change = float(np.abs(exact_ablated[-1] - exact_clean[-1]).sum())
    assert answer_row_change > 100 * tolerance
    # What was sent: f16 of those matrices; the difference is ablated minus clean.
    assert np.abs(ablated - exact_ablated).max() < 1e-3 and np.abs(clean - exact_clean).max() < 1e-3
    assert np.abs(diff - (exact_ablated - exact_clean)).max() < 1e-3
    # Layer 0's own attention cannot change (the ablation acts after it): exactly equal.
    assert np.array_equal(explorer.session.ablated_view(ablations).head_matrix(0, 0), explorer.session.head_matrix(0, 0))


def test_without_ablations_clean_ablated_and_difference_agree(explorer):
    explorer.statement_index = 0
    clean, _ = matrix(explorer, 1, 2)
    ablated, reply = matrix(explorer, 1, 2, run="ablated", ablations=[])
    diff, _ = matrix(explorer, 1, 2, run="difference", ablations=[])
    assert "no heads are ablated" in reply["run_label"]
    assert np.array_equal(clean, ablated) and not diff.any()
    for kind, params in [
        ("token_values", {"scope": "focus", "layer": 1, "head": 2, "selection": [], "direction": "from"}),
        ("flow", {"selection": []}),
    ]:
        a, ab = ask(explorer, kind=kind, **params)
        b, bb = ask(explorer, kind=kind, run="ablated", ablations=[], **params)
        name = "values" if kind == "token_values" else "spread"
        assert np.array_equal(decode_array(a["arrays"][name], ab), decode_array(b["arrays"][name], bb))


def test_token_values_and_flow_follow_the_run(explorer):
    explorer.statement_index = 0
    ablations = [{"layer": KEY_HEAD[0], "head": KEY_HEAD[1], "mode": "zero"}]
    params = {"scope": "layer", "layer": 1, "selection": [], "direction": "from"}
    clean, cb = ask(explorer, kind="token_values", **params)
    ablated, abb = ask(explorer, kind="token_values", run="ablated", ablations=ablations, **params)
    diff, db = ask(explorer, kind="token_values", run="difference", ablations=ablations, **params)
    c, a, d = (decode_array(r["arrays"]["values"], b) for r, b in [(clean, cb), (ablated, abb), (diff, db)])
    assert np.abs(a - c).max() > 0.01
    assert np.abs(d - (a - c)).max() < 2e-3  # each of the three was rounded to float16 once
    flow, _ = ask(explorer, kind="flow", selection=[], run="ablated", ablations=ablations)
    clean_flow, _ = ask(explorer, kind="flow", selection=[])
    # the logit lens after the last layer is the ablated run's answer
    assert flow["logit_lens"][-1] == pytest.approx(
        explorer.session.prediction(ablations)["ablated"]["logit_diff"], abs=1e-4
    )
    assert clean_flow["logit_lens"][-1] == pytest.approx(explorer.session.clean.logit_diff, abs=1e-5)


def test_requests_for_state_ask_for_the_run_shown(explorer):
    state = {**explorer.get_state(), "attention_run": "difference", "ablations": [{"layer": 0, "head": 1, "mode": "zero"}]}
    kinds = {r["kind"]: r for r in requests_for_state(state)}
    for kind in ("head_matrix", "token_values", "flow"):
        assert kinds[kind]["run"] == "difference" and kinds[kind]["ablations"] == state["ablations"]
    assert "run" not in kinds["grid"]
    for request in requests_for_state(state):
        assert explorer.handle_request({"id": 2, **request})[0]["ok"]


# ---------------------------------------------------------------------------- "mean" as in the Python API
def test_the_uis_mean_ablation_equals_the_python_apis_with_the_same_reference(explorer, demo, statements):
    model, tokenizer = demo
    explorer.statement_index = 0
    reference = explorer.catalogue["reference"]
    assert reference["available"] and reference["name"] == (
        f"{DEMO_REFERENCE_COUNT} demo statements (make_statements seed {DEMO_REFERENCE_SEED})"
    )
    reply, _ = ask(explorer, kind="set_ablations", ablations=[{"layer": 0, "head": 1, "mode": "mean"}])
    ui_change = reply["prediction"]["ablated"]["logit_diff"] - reply["prediction"]["clean"]["logit_diff"]
    api = sweep_heads(
        model, EarningsTask(tokenizer), [statements[0].text], mode="mean", heads=[KEY_HEAD], progress=False,
        reference=make_statements(DEMO_REFERENCE_COUNT, seed=DEMO_REFERENCE_SEED), batch_size=1,
    )
    # the same code path (cached run, same reference outputs): exactly equal
    assert reply["prediction"]["ablated"]["logit_diff"] == api["logit_diff"][0]
    assert ui_change == api["change"][0]
    # the model card's size of effect, not the 0.003 of a mean over the statement's own tokens
    assert abs(ui_change) > 5
    explorer.reset()


# ---------------------------------------------------------------------------- several statements
def test_moving_between_statements_keeps_the_ablations(explorer, demo, statements):
    model, tokenizer = demo
    assert [s["index"] for s in explorer.statements] == [0, 1, 2]
    explorer.statement_index = 0
    explorer.ablate(*KEY_HEAD)
    explorer.select("Net income")
    explorer.statement_index = 2
    assert explorer.ablations == [{"layer": 0, "head": 1, "mode": "zero"}]
    assert explorer.selection == {}  # spans differ between statements
    assert explorer.statement_layout["text"].startswith(statements[2].text)
    single = AttentionExplorer(model, tokenizer, statements[2].text)
    assert explorer.prediction["clean"] == single.prediction["clean"]
    assert explorer.prediction["ablated"] == single.ablate(*KEY_HEAD)["ablated"]
    reply, buffers = ask(explorer, kind="head_matrix", layer=1, head=0, encoding="f16")
    assert np.abs(decode_array(reply["arrays"]["matrix"], buffers) - single.session.head_matrix(1, 0)).max() < 1e-3
    explorer.reset()
    explorer.statement_index = 0


def test_statements_from_a_dataframe_column_and_bad_lists(demo, statements):
    model, tokenizer = demo
    frame = pd.DataFrame({"text": [s.text for s in statements[:2]]})
    explorer = AttentionExplorer(model, tokenizer, frame["text"])
    assert len(explorer.statements) == 2
    assert AttentionExplorer(model, tokenizer, frame).statement_texts == list(frame["text"])
    with pytest.raises(ValueError, match="one column"):
        AttentionExplorer(model, tokenizer, frame.assign(other=1))
    with pytest.raises(ValueError, match="empty list"):
        AttentionExplorer(model, tokenizer, [])
    with pytest.raises(ValueError, match=r"items \[1\]"):
        AttentionExplorer(model, tokenizer, [statements[0].text, 3])
    with pytest.raises(Exception, match="statement_index"):
        explorer.statement_index = 5
    assert explorer.statement_index == 0


def test_the_sweep_over_statements_is_the_python_apis_sweep_summarized(explorer, demo, statements):
    model, tokenizer = demo
    progress = []
    reply, buffers = explorer.handle_request(
        {"id": 7, "kind": "sweep", "mode": "zero", "statements": "all"},
        send_progress=lambda done, total, message="": progress.append((done, total)),
    )
    assert reply["ok"] and reply["measure"] == "mean_abs_change"
    assert progress[-1] == (3 * 8, 3 * 8)
    api = summarize_sweep(sweep_heads(model, EarningsTask(tokenizer), [s.text for s in statements],
                                      mode="zero", progress=False, batch_size=1))
    grid = decode_array(reply["arrays"]["values"], buffers).reshape(2, 4)
    expected = np.zeros((2, 4), dtype=np.float32)
    expected[api["layer"], api["head"]] = api["mean_abs_change"]
    assert np.array_equal(grid, expected.astype(np.float16).astype(np.float32))
    flips, fb = ask(explorer, kind="grid", measure="flip_rate")
    rate = np.zeros((2, 4), dtype=np.float32)
    rate[api["layer"], api["head"]] = api["flip_rate"]
    assert np.array_equal(decode_array(flips["arrays"]["values"], fb).reshape(2, 4), rate.astype(np.float16).astype(np.float32))
    # the key head is the top head of the sweep
    assert tuple(api.iloc[0][["layer", "head"]]) == KEY_HEAD
    assert explorer.grid_measure == "mean_abs_change"


def test_a_cancelled_sweep_stops_and_leaves_the_model_clean(explorer, demo):
    model, _ = demo
    batch = explorer.session.batch
    with torch.no_grad():
        before = model(**batch).logits
    explorer.sweep_cancel.clear()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done == 2:
            explorer.handle_request({"id": 9, "kind": "cancel_sweep"})

    reply, _ = explorer.handle_request({"id": 8, "kind": "sweep", "mode": "zero", "statements": "all"},
                                       send_progress=lambda d, t, m="": progress(d, t))
    assert not reply["ok"] and "cancelled after 2 of 24" in reply["error"]
    with pytest.raises(SweepCancelled):
        explorer.sweep("zero", statements="all", should_stop=lambda: True)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


def test_a_sweep_from_the_frontend_runs_beside_the_kernel_and_can_be_cancelled(explorer):
    import threading

    sent = []
    progressed = threading.Event()
    replied = threading.Event()

    def send(content, buffers=None):
        sent.append(content)
        if content.get("kind") == "progress":
            progressed.set()
        if content.get("kind") == "reply" and content.get("request") == "sweep":
            replied.set()

    explorer.send = send
    try:
        explorer._on_custom_message(explorer, {"id": 20, "kind": "sweep", "mode": "zero", "statements": "all"}, [])
        assert progressed.wait(60), "no progress from the sweep's thread"
        # The sweep holds the model: other model work is refused at once (the kernel stays free).
        explorer._on_custom_message(
            explorer, {"id": 21, "kind": "set_ablations", "ablations": [{"layer": 0, "head": 0, "mode": "zero"}]}, []
        )
        refused = next(m for m in sent if m.get("id") == 21)
        assert not refused["ok"] and "a sweep is running" in refused["error"]
        # Attention from the clean capture needs no model and is answered meanwhile.
        explorer._on_custom_message(explorer, {"id": 22, "kind": "head_matrix", "layer": 1, "head": 0}, [])
        assert next(m for m in sent if m.get("id") == 22)["ok"]
        explorer._on_custom_message(explorer, {"id": 23, "kind": "cancel_sweep"}, [])
        assert replied.wait(60), "the sweep never replied"
    finally:
        del explorer.send
    reply = next(m for m in sent if m.get("id") == 20 and m["kind"] == "reply")
    assert not reply["ok"] and "sweep cancelled after" in reply["error"]
    assert explorer.ablations == []
    assert explorer.model_lock.acquire(blocking=False)
    explorer.model_lock.release()
