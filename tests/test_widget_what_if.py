"""What-if in the explorer without a browser: the what_if / undo_what_if requests, the Python
API, the difference colouring and the saved state, on the shipped demo model.

The demo model's planted rule is "increase when net income and operating cash flow both
rose"; in the statement of seed 3 both rose, so setting net income 2012 below 2011 must
flip the answer to "decrease" (a known truth, checked against a run of the edited text)."""

import json
import re

import numpy as np
import pytest
import traitlets
from helpers import sweep_in_progress

from finwidget.errors import InputError
from finwidget.statement import aggregate_to_spans
from finwidget.widgets import AttentionExplorer
from finwidget.widgets.protocol import decode_array, layout_state, request_key, requests_for_state
from finwidget.widgets.session import ModelSession
from finwidget.widgets.what_if import align_spans, parse_number_text


@pytest.fixture()
def explorer(demo, text):
    model, tokenizer, _ = demo
    return AttentionExplorer(model, tokenizer, text)


def ask(explorer, **message):
    return explorer.handle_request({"id": 7, **message})


def net_income(explorer, year=2012):
    return next(
        s for s in explorer.session.layout.spans
        if s.line_item == "Net income" and s.kind == "number" and s.year == year
    )


def snapshot(explorer) -> dict:
    return {name: json.dumps(getattr(explorer, name), sort_keys=True)
            for name in ("statement_layout", "prediction", "what_if_state", "selection", "geometry")}


def test_editing_net_income_flips_the_demo_answer_and_shows_both_predictions(explorer, demo, text):
    model, tokenizer, _ = demo
    span = net_income(explorer)
    assert span.text == "195"
    reply, _ = ask(explorer, kind="what_if", span=span.index, value="-100")
    assert reply["ok"], reply
    state = explorer.what_if_state
    assert reply["what_if_state"] == state
    assert [e["description"] for e in state["edits"]] == ["Net income 2012: 195 → -100"]
    # The change column was recomputed by the counterfactual code: 2011 was 151.
    assert "Net income: change -251 | 2012: -100 | 2011: 151" in explorer.session.text
    # Both predictions: the original from a run of the original text, the edited from a run
    # of the edited text (the same code path, so exactly equal).
    original = ModelSession(model, tokenizer, text).clean.to_dict()
    edited = ModelSession(model, tokenizer, explorer.session.text).clean.to_dict()
    assert state["original"] == original and state["edited"] == edited
    assert original["label"] == "increase" and edited["label"] == "decrease" and state["flipped"]
    assert state["logit_diff_change"] == pytest.approx(edited["logit_diff"] - original["logit_diff"], abs=0)
    # The explorer shows the edited statement: its layout and prediction.
    assert explorer.statement_layout["text"].startswith(explorer.session.text)
    assert explorer.prediction["clean"] == edited
    assert edited["n_tokens"] != original["n_tokens"]  # "-100" takes more tokens than "195"
    changed = {c["what"]: (c["old"], c["new"]) for c in state["changes"]}
    assert changed == {"Net income 2012": ("195", "-100"), "Net income change": ("+44", "-251")}
    layout = explorer.session.layout
    assert {layout.spans[j].text for j in state["changed_spans"]} == {"-100", "-251"}


def test_undo_returns_to_the_original_one_edit_at_a_time(explorer, text):
    before = snapshot(explorer)
    explorer.what_if_number(net_income(explorer).index, "-100")
    after_first = snapshot(explorer)
    explorer.what_if_number(net_income(explorer, 2011).index, "(50)")
    state = explorer.what_if_state
    assert state["steps"] == 2
    assert [e["description"] for e in state["edits"]] == ["Net income 2012: 195 → -100", "Net income 2011: 151 → -50"]
    assert "Net income: change -50 | 2012: -100 | 2011: -50" in explorer.session.text
    reply, _ = ask(explorer, kind="undo_what_if")
    assert reply["ok"], reply
    assert snapshot(explorer) == after_first
    explorer.undo_what_if()
    assert explorer.session.text == text
    assert snapshot(explorer) == before
    assert explorer.what_if_state == {"available": True, "disabled_reason": ""}
    reply, _ = ask(explorer, kind="undo_what_if")
    assert not reply["ok"] and "no what-if edit to undo" in reply["error"]


def test_python_api_takes_edits_or_a_counterfactual_like_the_ui(explorer, text):
    from finwidget.statement.edits import SetNumber, SetValue, counterfactual

    span = net_income(explorer)
    edit = SetNumber(span=(span.char_start, span.char_end), value=-100)
    by_edits = explorer.what_if([edit])
    explorer.undo_what_if()
    by_counterfactual = explorer.what_if(counterfactual(text, [edit]))
    assert by_counterfactual == by_edits
    # A counterfactual of the original replaces the edits made so far (the sensitivity plot's click).
    state = explorer.what_if(counterfactual(text, [SetValue("Net income", 10)]))
    assert state["steps"] == 1 and state["edits"][0]["description"] == "Net income 2012: 195 → 10"
    small = "Net income: change +5 | 2012: 10 | 2011: 5"
    at = small.index("10")
    other = counterfactual(small, [SetNumber(span=(at, at + 2), value=1)])
    with pytest.raises(InputError, match="another statement"):
        explorer.what_if(other)
    with pytest.raises(InputError, match="at least one edit"):
        explorer.what_if([])


def test_an_edit_the_counterfactual_code_refuses_leaves_the_explorer_as_it_was(explorer):
    from finwidget.statement.edits import SetNumber, SetValue

    before = snapshot(explorer)
    with pytest.raises(InputError):
        explorer.what_if([SetNumber(span=(0, 9), value=1)])  # "Financial": not a number
    with pytest.raises(InputError, match="no line item"):
        explorer.what_if(SetValue("Dividends", 1))
    assert snapshot(explorer) == before


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"span": "net income", "value": "1"}, "span must be a span index"),
        ({"span": 10**6, "value": "1"}, "span must be a span index"),
        ({"span": 0, "value": 12}, "value must be the text typed"),
        ({"span": 0, "value": "1" * 200}, "value must be the text typed"),
        ({"span": 0, "value": "1"}, "“Financial” is not a number of the statement"),
    ],
)
def test_bad_what_if_requests_get_an_error_and_change_nothing(explorer, message, problem):
    before = snapshot(explorer)
    reply, _ = ask(explorer, kind="what_if", **message)
    assert not reply["ok"] and problem in reply["error"]
    assert snapshot(explorer) == before


@pytest.mark.parametrize("typed", ["abc", "1e5", "--3", "12abc", "", "(-5)", "1,23"])
def test_text_that_is_not_a_number_is_refused_and_changes_nothing(explorer, typed):
    before = snapshot(explorer)
    reply, _ = ask(explorer, kind="what_if", span=net_income(explorer).index, value=typed)
    assert not reply["ok"] and "is not a number" in reply["error"]
    assert snapshot(explorer) == before
    with pytest.raises(InputError, match="is not a number"):
        explorer.what_if_number(net_income(explorer).index, typed)


def test_numbers_as_people_type_them():
    assert parse_number_text("-100") == -100
    assert parse_number_text("−1,250") == -1250
    assert parse_number_text("(100)") == -100
    assert parse_number_text("$3,500.5") == 3500.5
    assert parse_number_text(" +7 ") == 7
    for bad in ("abc", "1e5", "--3", "", "1,23", "(-5)", "nan", "inf", "1.2.3"):
        assert parse_number_text(bad) is None, bad


def test_an_edit_that_changes_nothing_and_a_refused_edit_leave_the_explorer_as_it_was(explorer, monkeypatch):
    from finwidget.statement import edits

    before = snapshot(explorer)
    with pytest.raises(InputError, match="changes nothing"):
        explorer.what_if_number(net_income(explorer).index, "195")

    def refuse(text, edits):
        raise ValueError("that edit cannot be made")

    monkeypatch.setattr(edits, "counterfactual", refuse)
    reply, _ = ask(explorer, kind="what_if", span=net_income(explorer).index, value="-100")
    assert not reply["ok"] and "that edit cannot be made" in reply["error"]
    assert snapshot(explorer) == before


def test_recorded_attention_cannot_try_a_what_if_and_says_why(demo, text):
    model, tokenizer, _ = demo
    session = ModelSession(model, tokenizer, text)
    recorded = AttentionExplorer.from_attention(session.capture, session.layout, prediction=session.clean)
    state = recorded.what_if_state
    assert state["available"] is False and "re-runs the model" in state["disabled_reason"]
    reply, _ = ask(recorded, kind="what_if", span=net_income(recorded).index, value="1")
    assert not reply["ok"] and "recorded attention only" in reply["error"]


def test_the_trait_is_read_only(explorer):
    with pytest.raises(traitlets.TraitError):
        explorer.what_if_state = {"edits": []}


def test_grid_difference_is_the_edited_runs_measure_minus_the_originals(explorer, text):
    original = explorer.session
    for measure in ("attention_to_selection", "entropy", "direct_logit_diff"):
        reply, _ = ask(explorer, kind="grid", measure=measure, what_if="difference")
        assert not reply["ok"] and "no what-if edit" in reply["error"]
    explorer.what_if_number(net_income(explorer).index, "-100")
    edited = explorer.session
    for measure in ("attention_to_selection", "entropy", "direct_logit_diff"):
        reply, buffers = ask(explorer, kind="grid", measure=measure, what_if="difference")
        assert reply["ok"], reply
        assert reply["what_if"] == "difference" and reply["label"].endswith("edited − original")
        values = decode_array(reply["arrays"]["values"], buffers).reshape(original.num_layers, original.num_heads)
        exact = edited.grid(measure, [])[0] - original.grid(measure, [])[0]
        # float16 on the wire: half an ulp of each value
        assert np.all(np.abs(values - exact) <= np.abs(exact) * 2.0**-11 + 2.0**-25), measure
        assert np.abs(exact).max() > 0, measure  # the edit moves every one of these


def test_statement_difference_matches_spans_across_runs_of_different_lengths(explorer):
    original = explorer.session
    explorer.what_if_number(net_income(explorer).index, "-100")
    edited = explorer.session
    assert edited.seq_len != original.seq_len
    mapping = align_spans(original.layout, edited.layout)
    for j, i in enumerate(mapping):
        span = edited.layout.spans[j]
        assert i >= 0, span  # every span has its counterpart (a number edit keeps the structure)
        other = original.layout.spans[i]
        assert (other.kind, other.line_item, other.year, other.line) == (span.kind, span.line_item, span.year, span.line)
        if j not in explorer.what_if_state["changed_spans"]:
            assert other.text == span.text
    reply, buffers = ask(explorer, kind="token_values", scope="focus", selection=[], direction="from",
                         layer=1, head=0, what_if="difference")
    assert reply["ok"], reply
    diff = decode_array(reply["arrays"]["span_values"], buffers)
    assert reply["arrays"]["span_values"]["encoding"] == "f32"
    # independently: each run's answer-position attention row of L1 H0, summed per span
    rows = [s.capture.attention(1, head=0).numpy()[s.answer_position] for s in (edited, original)]
    spans = [aggregate_to_spans(r, s.layout) for r, s in zip(rows, (edited, original))]
    exact = spans[0] - spans[1][mapping]
    np.testing.assert_allclose(diff, exact, rtol=0, atol=4 * np.finfo(np.float32).eps)
    assert "edited − original" in reply["label"]


def test_span_matching_agrees_with_the_counterfactuals_own_alignment(explorer, text):
    from finwidget.statement.edits import SetValue, counterfactual

    original = explorer.session
    cf = counterfactual(text, [SetValue("Net income", -100), SetValue("Revenue", 12_345, year=2011)])
    explorer.what_if(cf)
    edited = explorer.session
    mapping = align_spans(original.layout, edited.layout, cf)
    # the same by the texts alone (difflib), without the counterfactual's alignment
    assert np.array_equal(mapping, align_spans(original.layout, edited.layout))
    offsets = [layout.text.find(t) for layout, t in ((original.layout, text), (edited.layout, cf.text))]

    def span_at(layout, char):
        return next(sp.index for sp in layout.spans if sp.char_start <= char < sp.char_end)

    checked = 0
    for seg in cf.alignment.spans:
        if seg.kind not in ("number", "line_item"):
            continue
        j = span_at(edited.layout, seg.edited_start + offsets[1])
        i = span_at(original.layout, seg.original_start + offsets[0])
        assert mapping[j] == i, seg
        checked += 1
    assert checked >= 30
    assert {c["new"] for c in explorer.what_if_state["changes"]} >= {"-100", "12,345"}


def test_requests_for_state_colour_by_difference_only_while_a_what_if_is_shown(explorer):
    state = {name: getattr(explorer, name) for name in explorer.class_trait_names(sync=True)}
    plain = requests_for_state(state)
    assert requests_for_state({**state, "what_if_difference": True}) == plain  # nothing to compare yet
    explorer.what_if_number(net_income(explorer).index, "-100")
    explorer.what_if_difference = True
    state = {name: getattr(explorer, name) for name in explorer.class_trait_names(sync=True)}
    by_kind = {r["kind"]: r for r in requests_for_state(state)}
    assert by_kind["grid"]["what_if"] == "difference"
    assert by_kind["token_values"] == {"kind": "token_values", "scope": "focus", "selection": [], "direction": "from",
                                       "layer": 0, "head": 0, "what_if": "difference"}
    assert "what_if" not in by_kind["head_matrix"] and "what_if" not in by_kind["flow"]
    for request in by_kind.values():
        reply, _ = ask(explorer, **request)
        assert reply["ok"], (request, reply)


def test_another_statement_drops_the_what_if(demo, text):
    model, tokenizer, _ = demo
    from finwidget.demo import make_statements

    explorer = AttentionExplorer(model, tokenizer, [text, make_statements(1, seed=4)[0].text])
    explorer.what_if_number(net_income(explorer).index, "-100")
    explorer.show_statement(1)
    assert "edits" not in explorer.what_if_state
    explorer.show_statement(0)
    assert "edits" not in explorer.what_if_state and explorer.session.text == text
    assert explorer.statement_layout == layout_state(explorer.session.layout, explorer.session.token_texts(),
                                                     explorer.session.answer_position)


def test_a_running_sweep_refuses_a_what_if(explorer):
    before = snapshot(explorer)
    with sweep_in_progress(explorer):
        with pytest.raises(InputError, match="sweep is running"):
            explorer.what_if_number(net_income(explorer).index, "-100")
        reply, _ = ask(explorer, kind="what_if", span=net_income(explorer).index, value="-100")
        assert not reply["ok"] and "sweep is running" in reply["error"]
    assert snapshot(explorer) == before


def test_the_what_if_is_in_the_saved_state_and_the_exported_page(explorer, tmp_path):
    explorer.what_if_number(net_income(explorer).index, "-100")
    saved = explorer.get_state()
    assert saved["what_if_state"]["edits"][0]["description"] == "Net income 2012: 195 → -100"
    assert saved["what_if_difference"] is False
    page = explorer.save_html(tmp_path / "what_if.html").read_text(encoding="utf-8")
    state = json.loads(re.search(r'<script type="application/json" id="fw-state">(.*?)</script>', page, re.DOTALL).group(1))
    traits = state["traits"]
    assert traits["what_if_state"]["original"]["label"] == "increase"
    assert traits["what_if_state"]["edited"]["label"] == "decrease"
    assert "2012: -100" in traits["statement_layout"]["text"]
    keys = {r["key"] for r in state["replies"]}
    # the difference switch works offline both ways
    flipped = {**traits, "what_if_difference": True}
    for request in requests_for_state(flipped) + requests_for_state(traits):
        assert request_key(request) in keys, request


def test_a_click_on_the_sensitivity_plot_opens_that_value_in_the_explorer(explorer, demo, text):
    """cf's sensitivity plot calls ``explorer.what_if(counterfactual)`` on a click: the explorer
    shows that value's statement, and its answer agrees with the curve's."""
    from finwidget.counterfactuals import sensitivity
    from finwidget.widgets.sensitivity_plot import plot_sensitivity

    model, tokenizer, _ = demo
    curve = sensitivity(model, tokenizer, text, "Net income", [-100, 120, 400])
    dots = plot_sensitivity(curve, explorer=explorer).marks[2]
    for index in (0, 2):  # each click replaces the what-if (a counterfactual of the original)
        dots._handle_custom_msgs(None, {"event": "element_click", "data": {"index": index}})
        state = explorer.what_if_state
        assert state["steps"] == 1
        assert explorer.session.text == curve.counterfactuals[index].text
        assert state["edited"]["label"] == ("increase" if curve.logit_diff[index] > 0 else "decrease")
    assert curve.logit_diff[0] < 0 < curve.logit_diff[2]
    explorer.undo_what_if()
    assert explorer.session.text == text
