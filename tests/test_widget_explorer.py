"""The explorer widget without a browser: its message handler, traits and saved state,
on a small random Qwen2 (grouped-query attention) and the demo tokenizer."""

import base64
import json
import math
import re

import ipywidgets
import numpy as np
import pytest
import torch
import traitlets
from reference_drift import cross_path_tolerance
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from finwidget.demo import MODEL_DIR, make_statements
from finwidget.interventions.spec import HeadIntervention, InterventionSet
from finwidget.task import EarningsTask
from finwidget.widgets import AttentionExplorer, HeadGrid, heatmap_view
from finwidget.widgets.protocol import decode_array, request_key

EPS32 = float(np.finfo(np.float32).eps)


def sqrt_byte_tolerance(spec, exact):
    """Largest error square-root bytes allow for each exact value (see protocol.quantize_sqrt_u8),
    plus the float32 rounding of the decode (an ulp of the largest value)."""
    top, half_step = spec["max"], 0.5 / 255
    return top * half_step * (2 * np.sqrt(np.maximum(exact, 0) / top) + half_step) + EPS32 * top


def transport_tolerance(spec, exact):
    """Largest error the array's wire encoding allows for each exact value: half a step for u8,
    half a float16 ulp (2**-11 relative, 2**-25 below float16's normal range) for f16, half a
    float32 ulp for f32."""
    exact = np.abs(np.asarray(exact, dtype=np.float64))
    if spec["encoding"] == "u8":
        return spec["scale"] / 2 + EPS32 * (abs(spec.get("offset", 0.0)) + 255 * spec["scale"])
    if spec["encoding"] == "f16":
        return exact * 2.0**-11 + 2.0**-25
    if spec["encoding"] == "f32":
        return exact * EPS32 / 2
    if spec["encoding"] == "u8sqrt":
        return sqrt_byte_tolerance(spec, exact)
    raise AssertionError(spec)


def ablated_logit_diff_tolerance(model, task, batch, interventions, measured, reference=None) -> float:
    """Twice the float32 API's measured distance from a float64 copy of the model under the same
    interventions, plus two ulps of the answer logits: the bound for another float32 path."""
    import copy

    exact_model = copy.deepcopy(model).double()
    with interventions.applied(exact_model, reference=reference), torch.no_grad():
        logits = exact_model(**batch).logits[0, -1, list(task.answer_token_ids)]
    exact = float(logits[0] - logits[1])
    return 2 * abs(measured - exact) + 2 * EPS32 * float(logits.abs().sum())


def float64_logit_lens(model, task, batch):
    """The decision pathway's logit lens (layers 0..L-1) of a float64 copy of the model."""
    import copy

    from finwidget.analysis import decision_pathway

    table = decision_pathway(copy.deepcopy(model).double(), task, batch).logit_lens
    return table[table["layer"] >= 0].sort_values("layer")["logit_diff"].to_numpy()


PAYLOADS = (
    '<script>alert("x")</script> <img src=x onerror=alert(1)> </script> <svg onload=alert(2)> <!-- \u2028'
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


def make_model(tokenizer, layers=3, heads=4, kv_heads=2, attn="sdpa", seed=0, context=2048):
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context,
        attn_implementation=attn,
    )
    model = Qwen2ForCausalLM(config).eval()
    # Sharper attention than random init gives, so wrong rows or heads cannot hide in uniform patterns.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_model(tokenizer)


@pytest.fixture(scope="module")
def statement():
    return make_statements(1, seed=3)[0].text


@pytest.fixture(scope="module")
def explorer(model, tokenizer, statement):
    return AttentionExplorer(model, tokenizer, statement)


def ask(explorer, **message):
    reply, buffers = explorer.handle_request({"id": 1, **message})
    return reply, buffers


def number_span(explorer):
    return next(s for s in explorer.session.layout.spans if s.kind == "number" and s.in_statement)


# ---------------------------------------------------------------------------- messages
def test_head_matrix_reply_is_the_heads_attention_as_eager_attention_computes_it(explorer, model, tokenizer):
    reply, buffers = ask(explorer, kind="head_matrix", layer=2, head=3)
    assert reply["ok"] and reply["id"] == 1 and (reply["layer"], reply["head"]) == (2, 3)
    spec = reply["arrays"]["matrix"]
    T = explorer.session.seq_len
    assert spec["tril"] and spec["shape"] == [T, T] and spec["encoding"] == "u8sqrt"
    assert len(buffers[0]) == T * (T + 1) // 2  # lower triangle, one byte a cell
    shown = decode_array(spec, buffers)
    # Independent reference: the same weights run with eager attention and output_attentions.
    eager = make_model(tokenizer, attn="eager")
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = eager(**explorer.session.batch, output_attentions=True)
    expected = out.attentions[2][0, 3].numpy()
    # the encoding's rounding plus SDPA-vs-eager: twice eager's measured float32 drift (reference_drift.py)
    drift = cross_path_tolerance(eager, explorer.session.batch, out.attentions)
    assert np.all(np.abs(shown - expected) <= sqrt_byte_tolerance(spec, expected) + drift)
    assert expected.max() > 0.5  # peaky enough for the comparison to mean something


def test_head_matrix_in_float16(explorer):
    reply, buffers = ask(explorer, kind="head_matrix", layer=0, head=1, encoding="f16")
    T = explorer.session.seq_len
    assert len(buffers[0]) == T * (T + 1)
    exact = explorer.session.capture.head_matrix(0, 1).numpy()
    spec = reply["arrays"]["matrix"]
    assert np.all(np.abs(decode_array(spec, buffers) - exact) <= transport_tolerance(spec, exact))


def test_token_values_from_a_selection_are_its_mean_attention_row(explorer):
    span = number_span(explorer)
    selection = [span.index, span.index + 1]
    reply, buffers = ask(
        explorer, kind="token_values", scope="focus", layer=1, head=2, selection=selection, direction="from"
    )
    assert reply["ok"] and reply["reduce"] == "sum"
    values = decode_array(reply["arrays"]["values"], buffers)
    matrix = explorer.session.capture.head_matrix(1, 2).numpy()
    expected = matrix[span.token_start : span.token_end].mean(axis=0)
    # the same recorded rows averaged in another order (a few ulps), then the wire encoding
    spec = reply["arrays"]["values"]
    assert np.all(np.abs(values - expected) <= transport_tolerance(spec, expected) + 4 * EPS32)


def test_token_values_to_a_selection_over_a_layer_range(explorer):
    span = number_span(explorer)
    tokens = list(range(span.token_start, span.token_end))
    reply, buffers = ask(
        explorer,
        kind="token_values",
        scope="range",
        layer_range=[1, 2],
        selection=[span.index, span.index + 1],
        direction="to",
    )
    assert reply["reduce"] == "mean"
    values = decode_array(reply["arrays"]["values"], buffers)
    cap, H = explorer.session.capture, explorer.session.num_heads
    expected = np.mean(
        [cap.head_matrix(layer, h).numpy()[:, tokens].sum(axis=1) for layer in (1, 2) for h in range(H)],
        axis=0,
    )
    spec = reply["arrays"]["values"]
    rounding = len(tokens) * 2 * H * EPS32 * float(np.abs(expected).max())  # sums in another order
    assert np.all(np.abs(values - expected) <= transport_tolerance(spec, expected) + rounding)


def test_grid_attention_to_selection_is_the_answer_rows_mass_on_it(explorer):
    span = number_span(explorer)
    reply, buffers = ask(
        explorer, kind="grid", measure="attention_to_selection", selection=[span.index, span.index + 1]
    )
    spec = reply["arrays"]["values"]
    grid = decode_array(spec, buffers).reshape(3, 4)
    s = explorer.session
    for layer, head in [(0, 0), (2, 3)]:
        row = s.capture.head_matrix(layer, head).numpy()[-1]
        want = row[span.token_start : span.token_end].sum()
        rounding = (span.token_end - span.token_start) * EPS32              # the same values summed
        assert abs(grid[layer, head] - want) <= float(transport_tolerance(spec, want)) + rounding


def test_grid_entropy_and_financial_focus(explorer):
    reply, buffers = ask(explorer, kind="grid", measure="entropy", selection=[])
    spec = reply["arrays"]["values"]
    entropy = decode_array(spec, buffers).reshape(3, 4)
    row = explorer.session.capture.head_matrix(1, 1).numpy()[-1]
    nz = row[row > 0]
    nats = float(-(nz * np.log(nz)).sum())
    # float32 terms p log p summed (n ulps of the sum of |terms|), then the wire encoding
    rounding = len(nz) * EPS32 * float(np.abs(nz * np.log(nz)).sum()) * 4
    # entropy is normalized as head_specialization's: nats / log(window), the answer row sees all T
    # tokens; the division rounds once more (an ulp of the quotient)
    window = math.log(explorer.session.seq_len)
    want = nats / window
    assert abs(entropy[1, 1] - want) <= float(transport_tolerance(spec, want)) + rounding / window + 2 * EPS32 * want
    reply, buffers = ask(explorer, kind="grid", measure="entropy_nats", selection=[])
    spec = reply["arrays"]["values"]
    nats_grid = decode_array(spec, buffers).reshape(3, 4)
    assert abs(nats_grid[1, 1] - nats) <= float(transport_tolerance(spec, nats)) + rounding
    reply, buffers = ask(explorer, kind="grid", measure="financial_focus")
    focus = decode_array(reply["arrays"]["values"], buffers)
    assert np.all((focus >= 0) & (focus <= 1.001))


def test_flow_reply_has_one_row_per_layer(explorer):
    span = number_span(explorer)
    reply, buffers = ask(explorer, kind="flow", selection=[span.index, span.index + 1])
    spread = decode_array(reply["arrays"]["spread"], buffers)
    S = explorer.session.layout.num_spans
    assert spread.shape == (3, S)
    # A selection can only attend to itself and what came before it (causal).
    assert np.all(spread[:, span.index + 1 :] == 0)
    # each row is a probability row summed into spans, then sent: S values, each within the encoding's bound
    row_tolerance = S * np.max(transport_tolerance(reply["arrays"]["spread"], spread)) + S * EPS32
    assert np.all(np.abs(spread.sum(axis=1) - 1.0) <= row_tolerance)
    assert len(reply["selection_mass"]) == 3 and len(reply["logit_lens"]) == 3


def test_set_ablations_answers_with_the_python_apis_number(explorer, model, statement, tokenizer):
    ablations = [
        {"layer": 1, "head": 2, "mode": "zero"},
        {"layer": 2, "head": 0, "mode": "scale", "value": 3.0},
    ]
    reply, _ = ask(explorer, kind="set_ablations", ablations=ablations)
    assert reply["ok"]
    shown = reply["prediction"]["ablated"]["logit_diff"]
    # Python API: apply the same interventions and run the whole model.
    task = EarningsTask(tokenizer)
    batch = task.encode(statement)
    interventions = InterventionSet(
        [HeadIntervention(1, 2, "zero"), HeadIntervention(2, 0, "scale", value=3.0)]
    )
    with interventions.applied(model):
        full = float(task.logit_diff(task.answer_logits(model, batch))[0])
    assert abs(shown - full) <= ablated_logit_diff_tolerance(model, task, batch, interventions, full)
    assert shown != reply["prediction"]["clean"]["logit_diff"]
    # The traits follow (saved with the notebook, seen by Python code).
    assert explorer.ablations == ablations
    assert explorer.prediction["ablated"]["logit_diff"] == shown
    assert explorer.prediction["flipped"] == ((shown > 0) != (explorer.prediction["clean"]["logit_diff"] > 0))
    reply, _ = ask(explorer, kind="set_ablations", ablations=[])
    assert reply["prediction"]["ablated"] is None and explorer.ablations == []


def test_mean_ablation_is_disabled_without_a_reference_set_on_a_model_other_than_the_demo(explorer):
    # "mean" means the Python API's mean: over a reference set; this random model has none.
    reason = explorer.catalogue["reference"]["disabled_reason"]
    assert not explorer.catalogue["reference"]["available"] and "reference" in reason
    mean = next(m for m in explorer.catalogue["modes"] if m["name"] == "mean")
    assert mean["disabled_reason"] == reason
    reply, _ = ask(explorer, kind="set_ablations", ablations=[{"layer": 0, "head": 1, "mode": "mean"}])
    assert not reply["ok"] and "mean ablation is disabled" in reply["error"] and reason in reply["error"]
    assert explorer.ablations == []


def test_mean_ablation_averages_over_the_reference_set_passed(model, statement, tokenizer):
    reference = [s.text for s in make_statements(3, seed=11)]
    explorer = AttentionExplorer(model, tokenizer, statement, reference=reference)
    assert explorer.catalogue["reference"] == {
        "available": True, "name": "3 statements you passed", "disabled_reason": ""
    }
    reply, _ = ask(explorer, kind="set_ablations", ablations=[{"layer": 0, "head": 1, "mode": "mean"}])
    task = EarningsTask(tokenizer)
    batch = task.encode(statement)
    # Independent path: the full forward with the intervention hooks, averaging over the same statements.
    mean = InterventionSet([HeadIntervention(0, 1, "mean")])
    reference_batch = task.encode(reference)
    with mean.applied(model, reference=reference_batch):
        full = float(task.logit_diff(task.answer_logits(model, batch))[0])
    tolerance = ablated_logit_diff_tolerance(model, task, batch, mean, full, reference=reference_batch)
    assert abs(reply["prediction"]["ablated"]["logit_diff"] - full) <= tolerance


def test_malformed_messages_get_error_replies_and_the_widget_keeps_working(explorer):
    for bad in [
        "not a dict",
        {"id": 3},
        {"id": 4, "kind": "head_matrix", "layer": 99, "head": 0},
        {"id": 5, "kind": "set_ablations", "ablations": [{"layer": 0, "head": 0, "mode": "rm -rf"}]},
        {"id": 6, "kind": "grid", "measure": "entropy", "selection": [0, 10**9]},
    ]:
        reply, buffers = explorer.handle_request(bad)
        assert reply["ok"] is False and reply["kind"] == "reply" and buffers == []
        assert reply["error"].startswith("bad request:")
        if isinstance(bad, dict) and "id" in bad:
            assert reply["id"] == bad["id"]
    assert explorer.ablations == []
    reply, _ = ask(explorer, kind="head_matrix", layer=0, head=0)
    assert reply["ok"]


def test_a_failure_inside_becomes_an_error_reply(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(explorer.session, "head_matrix", broken)
    reply, _ = ask(explorer, kind="head_matrix", layer=0, head=0)
    assert reply["ok"] is False and "out of memory" in reply["error"]


def test_ablation_effect_before_a_sweep_says_what_to_do(model, tokenizer, statement):
    fresh = AttentionExplorer(model, tokenizer, statement, views=["grid"])
    reply, _ = ask(fresh, kind="grid", measure="ablation_effect")
    assert reply["ok"] is False and "Sweep" in reply["error"]


def test_sweep_sends_progress_and_colours_the_grid_by_each_heads_effect(explorer):
    progress = []
    reply, buffers = explorer.handle_request(
        {"id": 9, "kind": "sweep", "mode": "zero"}, send_progress=lambda d, t, m="": progress.append((d, t))
    )
    assert reply["ok"] and reply["measure"] == "ablation_effect"
    assert progress[-1] == (12, 12) and len(progress) >= 2
    spec = reply["arrays"]["values"]
    effect = decode_array(spec, buffers).reshape(3, 4)
    for layer, head in [(0, 2), (2, 1)]:
        one = explorer.session.prediction([{"layer": layer, "head": head, "mode": "zero"}])
        change = one["ablated"]["logit_diff"] - one["clean"]["logit_diff"]
        # the sweep and one prediction run the same cached path: only the wire encoding differs
        assert abs(effect[layer, head] - change) <= float(transport_tolerance(spec, change)) + 4 * EPS32 * max(
            1.0, abs(one["clean"]["logit_diff"]))
    assert explorer.grid_measure == "ablation_effect" and explorer.sweep_done


def test_png_from_the_frontend_is_kept(explorer):
    png = b"\x89PNG\r\n\x1a\nfake"
    reply, _ = ask(
        explorer,
        kind="png",
        view="matrix",
        data_url="data:image/png;base64," + base64.b64encode(png).decode(),
    )
    assert reply["ok"] and explorer.last_png == png and explorer.last_png_view == "matrix"


# ---------------------------------------------------------------------------- traits
def test_traits_round_trip_through_the_frontends_state_messages(explorer):
    explorer.set_state(
        {
            "focus": {"layer": 2, "head": 1},
            "selection": {"start": 3, "end": 6},
            "direction": "to",
            "layer_range": [1, 2],
            "grid_measure": "entropy",
        }
    )
    assert explorer.focus == {"layer": 2, "head": 1}
    assert explorer.selection == {"start": 3, "end": 6}
    state = explorer.get_state()
    assert state["focus"] == {"layer": 2, "head": 1} and state["direction"] == "to"
    assert state["layer_range"] == [1, 2]
    explorer.set_state(
        {
            "focus": {"layer": 0, "head": 0},
            "selection": {},
            "direction": "from",
            "layer_range": [],
            "grid_measure": "attention_to_selection",
        }
    )


@pytest.mark.parametrize(
    "name,value,problem",
    [
        ("focus", {"layer": 3, "head": 0}, "outside the model"),
        ("focus", {"layer": 0}, "focus must be"),
        ("selection", {"start": 5, "end": 2}, "out of range"),
        ("direction", "up", "direction must be"),
        ("grid_measure", "vibes", "grid_measure must be"),
        ("layer_range", [0, 7], "out of range"),
        ("ablations", [{"layer": 0, "head": 9}], "outside the model"),
        ("views", ["matrix", "radar"], "views must be"),
        ("settings", {"ablate_mode": "nuke"}, "ablate_mode"),
        ("settings", {"colour": "red"}, "unknown settings"),
    ],
)
def test_bad_trait_values_are_refused_and_leave_the_old_value(explorer, name, value, problem):
    before = getattr(explorer, name)
    with pytest.raises(traitlets.TraitError, match=problem):
        setattr(explorer, name, value)
    assert getattr(explorer, name) == before


def test_setting_ablations_from_python_updates_the_prediction(explorer):
    explorer.ablate(2, 3)
    assert explorer.ablations == [{"layer": 2, "head": 3, "mode": "zero"}]
    ablated = explorer.prediction["ablated"]["logit_diff"]
    assert ablated == explorer.session.cached.predict(InterventionSet([HeadIntervention(2, 3)]))[0].logit_diff
    assert explorer.intervention_set == InterventionSet([HeadIntervention(2, 3)])
    explorer.restore(2, 3)
    assert explorer.prediction["ablated"] is None


def test_focus_links_to_other_widgets(model, tokenizer, statement, explorer):
    grid = HeadGrid(model, tokenizer, statement, session=explorer.session)
    matrix = heatmap_view(explorer.session, layer=1, head=1)
    assert grid.views == ["grid", "prediction"] and matrix.views == ["matrix"]
    assert matrix.focus == {"layer": 1, "head": 1}
    link = ipywidgets.link((grid, "focus"), (matrix, "focus"))
    grid.focus = {"layer": 2, "head": 0}
    assert matrix.focus == {"layer": 2, "head": 0}
    link.unlink()


def test_unknown_keyword_arguments_are_refused(model, tokenizer, statement, explorer):
    with pytest.raises(ValueError, match="unknown keyword arguments"):
        AttentionExplorer(model, tokenizer, statement, session=explorer.session, colour="red")


# ---------------------------------------------------------------------------- size and export
def test_saved_state_of_a_1024_token_statement_is_under_2_mb(tokenizer):
    lines = [line for s in make_statements(6, seed=11) for line in s.text.split("\n")[:-1]]
    task = EarningsTask(tokenizer)
    count = 1
    while len(task.encode("\n".join(lines[:count]))["input_ids"][0]) < 1024:
        count += 1
    text = "\n".join(lines[:count])
    model = make_model(tokenizer, layers=2, heads=4, kv_heads=2)
    widget = AttentionExplorer(model, tokenizer, text)
    assert widget.session.seq_len >= 1024
    from ipywidgets.embed import dependency_state, embed_data

    saved = embed_data(views=[widget], state=dependency_state([widget]))["manager_state"]
    size = len(json.dumps(saved).encode("utf-8"))
    print(
        f"saved widget state at T={widget.session.seq_len}: {size / 1e6:.3f} MB "
        f"(traits alone: {widget.state_size() / 1e6:.3f} MB)"
    )
    assert size < 2_000_000
    # No attention tensor is in the state: nothing in it grows with T x T. The part that does
    # not depend on the statement (catalogue, trait schema, settings) is measured on a short one.
    short = AttentionExplorer(model, tokenizer, "\n".join(lines[:2]))
    growth = widget.state_size() - short.state_size()
    print(f"traits grow by {growth / (widget.session.seq_len - short.session.seq_len):.1f} bytes per token")
    # Per token the traits hold its text, offsets, span and category (~100 bytes); any T x T
    # tensor would add at least T = 1,024 bytes per token even at one byte per weight.
    assert growth < 256 * (widget.session.seq_len - short.session.seq_len)


def test_save_html_embeds_escaped_state_that_reads_back(model, tokenizer, statement, tmp_path):
    lines = statement.split("\n")
    text = "\n".join(lines[:2] + [PAYLOADS] + lines[2:])
    widget = AttentionExplorer(model, tokenizer, text, selection=(2, 4))
    widget.ablate(1, 0)
    page = widget.save_html(tmp_path / "explorer.html").read_text(encoding="utf-8")
    # The statement's HTML never appears raw: only our own script elements open and close.
    assert page.count("<script") == 3 and page.count("</script>") == 3
    assert "<img" not in page and "<svg" not in page and "<!--" not in page and "\u2028" not in page
    assert "https://" not in page and "http://" not in page  # nothing from a CDN
    state_json = re.search(
        r'<script type="application/json" id="fw-state">(.*?)</script>', page, re.DOTALL
    ).group(1)
    state = json.loads(state_json)
    assert PAYLOADS.split(" ")[0] in state["traits"]["statement_layout"]["text"]
    assert state["traits"]["ablations"] == [{"layer": 1, "head": 0, "mode": "zero"}]
    keys = {r["key"] for r in state["replies"]}
    assert request_key({"kind": "head_matrix", "layer": 0, "head": 0}) in keys
    # the flow carries the direction switch (the widget's default, "from")
    assert request_key({"kind": "flow", "selection": [2, 4], "direction": "from"}) in keys
    with pytest.raises(ValueError, match=".html"):
        widget.save_html(tmp_path / "explorer.txt")


def test_direct_contributions_and_logit_lens_come_from_the_decision_pathway(explorer):
    reply, buffers = ask(explorer, kind="grid", measure="direct_logit_diff")
    assert reply["ok"], reply.get("error")
    spec = reply["arrays"]["values"]
    direct = decode_array(spec, buffers).reshape(3, 4)
    from finwidget.analysis import decision_pathway

    session = explorer.session
    pathway = decision_pathway(session.model, session.task, session.batch)
    expected = pathway.heads.set_index(["layer", "head"])["contribution"]
    # the same decomposition, sent over the wire
    assert abs(direct[2, 1] - expected[(2, 1)]) <= float(transport_tolerance(spec, expected[(2, 1)])) + 4 * EPS32 * max(
        1.0, float(np.abs(expected.to_numpy()).max()))
    reply, _ = ask(explorer, kind="flow", selection=[])
    lens = np.asarray(reply["logit_lens"])
    # Read from the cached clean run, it equals the analysis layer's logit lens after every layer:
    # two float32 paths, within twice the pathway's measured distance from its float64 values.
    table = pathway.logit_lens
    expected = table[table["layer"] >= 0].sort_values("layer")["logit_diff"].to_numpy()
    exact = float64_logit_lens(session.model, session.task, session.batch)
    tolerance = 2 * np.abs(expected - exact) + 2 * EPS32 * np.maximum(np.abs(exact), 1.0)
    assert np.all(np.abs(lens - expected) <= tolerance)
    # The last layer's logit-lens reading is the model's own answer.
    assert abs(lens[-1] - explorer.prediction["clean"]["logit_diff"]) <= tolerance[-1]


def test_flow_does_not_run_the_model_again(explorer, monkeypatch):
    calls = []
    vars(explorer.session).pop("_logit_lens", None)  # the session's cached readout, read again below
    model = explorer.session.model
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        reply, _ = ask(explorer, kind="flow", selection=[1, 3])
    finally:
        handle.remove()
    assert reply["ok"] and calls == []
    session = explorer.session
    exact = float64_logit_lens(session.model, session.task, session.batch)[-1]
    clean = explorer.prediction["clean"]["logit_diff"]
    tolerance = 2 * abs(clean - exact) + 2 * EPS32 * max(abs(exact), 1.0)    # two float32 paths, measured
    assert abs(reply["logit_lens"][-1] - clean) <= tolerance


def test_the_guides_analyzer_gets_widget_views_of_its_recorded_attention(model, tokenizer, statement):
    from finwidget.analysis import quick_attention_analysis
    from finwidget.widgets import flow_view

    analyzer = quick_attention_analysis(model, tokenizer, statement, layer_idx=1)
    matrix = heatmap_view(analyzer, layer=1, head=2)
    assert matrix.views == ["matrix"] and matrix.focus == {"layer": 1, "head": 2}
    reply, buffers = ask(matrix, kind="head_matrix", layer=1, head=2)
    expected = np.asarray(analyzer.attention_weights["layer_1"][0, 2])
    shown = decode_array(reply["arrays"]["matrix"], buffers)
    # the same recorded attention (the analyzer's), only the wire encoding between them
    assert np.all(np.abs(shown - expected) <= sqrt_byte_tolerance(reply["arrays"]["matrix"], expected))
    flow = flow_view(analyzer, layer=1)
    assert flow.settings["statement_heads"] == "layer" and flow.focus["layer"] == 1
    reply, _ = ask(flow, kind="flow", selection=[])
    assert reply["ok"] and reply["logit_lens"] == [None] * 3 and "needs the model" in reply["label"]
    # Nothing to ablate without the model: a clear error reply, not a crash.
    reply, _ = ask(flow, kind="set_ablations", ablations=[{"layer": 0, "head": 0, "mode": "zero"}])
    assert reply["ok"] is False and "needs the model" in reply["error"]
    assert flow.prediction["clean"]["logit_diff"] == analyzer.prediction.logit_diff


def test_an_explorer_of_a_dict_of_attention_tensors(tokenizer, statement, model):
    from finwidget.statement import read_statement

    task = EarningsTask(tokenizer)
    batch = task.encode(statement)
    eager = make_model(tokenizer, attn="eager")
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = eager(**batch, output_attentions=True)
    weights = {f"layer_{i}": a for i, a in enumerate(out.attentions) if i != 1}  # layer 1 not kept
    layout = read_statement(statement, tokenizer, input_ids=batch["input_ids"][0].tolist(), task=task)
    widget = AttentionExplorer.from_attention(weights, layout)
    assert "prediction" not in widget.views and widget.prediction == {}
    reply, buffers = ask(widget, kind="grid", measure="entropy", selection=[])
    grid = decode_array(reply["arrays"]["values"], buffers).reshape(3, 4)
    assert np.isnan(grid[1]).all() and np.isfinite(grid[[0, 2]]).all()
    reply, _ = ask(widget, kind="head_matrix", layer=1, head=0)
    assert reply["ok"] is False and "not recorded" in reply["error"]
    reply, _ = ask(widget, kind="flow", selection=[])
    assert reply["ok"] and reply["selection_mass"][1] is None


def test_select_by_line_item_name_or_text(explorer):
    layout = explorer.session.layout
    item = layout.line_items[1]
    sel = explorer.select(item.name.upper())
    spans = layout.spans[sel["start"] : sel["end"]]
    assert spans[0].text == layout.spans[item.name_span].text
    assert {s.index for s in spans} >= set(item.number_spans)
    number = layout.spans[item.number_spans[0]]
    assert explorer.select(number.text) == {"start": number.index, "end": number.index + 1}
    assert explorer.select((2, 5)) == {"start": 2, "end": 5}
    with pytest.raises(ValueError, match="neither a line item"):
        explorer.select("Goodwill impairment of Atlantis")
    assert explorer.select(None) == {}


def test_bad_arguments_fail_before_any_model_work(tokenizer, statement):
    class Untouchable(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the model must not run")

    with pytest.raises(ValueError, match="views must be"):
        AttentionExplorer(Untouchable(), tokenizer, statement, views="matrix")
    with pytest.raises(ValueError, match="views must be"):
        AttentionExplorer(Untouchable(), tokenizer, statement, views=["matrix", "3d"])
    with pytest.raises(ValueError, match="needs a model"):
        AttentionExplorer(None, tokenizer, statement)
    with pytest.raises(ValueError, match="statement is empty"):
        AttentionExplorer(make_model(tokenizer, layers=1), tokenizer, "   ")


def test_set_ablations_can_bring_a_grid_measure_along(explorer):
    reply, buffers = ask(
        explorer,
        kind="set_ablations",
        ablations=[{"layer": 0, "head": 3, "mode": "zero"}],
        grid="financial_focus",
    )
    assert reply["ok"] and reply["measure"] == "financial_focus"
    assert decode_array(reply["arrays"]["values"], buffers).shape == (12,)
    explorer.reset()


def test_save_html_can_embed_a_whole_layer(explorer, tmp_path):
    explorer.focus = {"layer": 2, "head": 1}
    page = explorer.save_html(tmp_path / "layer.html", heads="layer").read_text(encoding="utf-8")
    state = json.loads(re.search(r'id="fw-state">(.*?)</script>', page, re.DOTALL).group(1))
    keys = {r["key"] for r in state["replies"]}
    assert all(request_key({"kind": "head_matrix", "layer": 2, "head": h}) in keys for h in range(4))
    assert request_key({"kind": "head_matrix", "layer": 1, "head": 0}) not in keys
    with pytest.raises(ValueError, match="heads must be"):
        explorer.save_html(tmp_path / "x.html", heads="every")
    explorer.focus = {"layer": 0, "head": 0}


def test_a_bfloat16_model_works_like_on_a_gpu(tokenizer, statement):
    model = make_model(tokenizer, layers=2).to(torch.bfloat16)
    widget = AttentionExplorer(model, tokenizer, statement)
    reply, buffers = ask(widget, kind="head_matrix", layer=1, head=2, encoding="f16")
    matrix = decode_array(reply["arrays"]["matrix"], buffers)
    assert np.allclose(matrix.sum(axis=1), 1.0, atol=0.02)  # rows are probabilities (float32 from bf16 Q/K)
    reply, _ = ask(widget, kind="flow", selection=[])
    assert reply["logit_lens"][-1] == pytest.approx(widget.prediction["clean"]["logit_diff"], abs=1e-2)
    reply, _ = ask(widget, kind="set_ablations", ablations=[{"layer": 0, "head": 1, "mode": "zero"}])
    assert reply["ok"] and reply["prediction"]["ablated"] is not None


def test_a_sweep_can_cover_only_a_layer_range(model, tokenizer, statement, explorer):
    widget = AttentionExplorer(model, tokenizer, statement, session=explorer.session)
    progress = []
    reply, buffers = widget.handle_request(
        {"id": 3, "kind": "sweep", "mode": "zero", "layer_range": [1, 2]},
        send_progress=lambda d, t, m="": progress.append((d, t)),
    )
    effect = decode_array(reply["arrays"]["values"], buffers).reshape(3, 4)
    assert np.isnan(effect[0]).all() and np.isfinite(effect[1:]).all()
    assert progress[-1] == (8, 8)
    table = widget.sweep(layers=[2])
    assert sorted(set(table["layer"])) == [2] and len(table) == 4
    with pytest.raises(ValueError, match="layers must be"):
        widget.sweep(layers=[5])
