"""Tasks beyond earnings: any question with two answer words, the same logit-difference readout.

"Is the going-concern risk high?" is asked of the demo model (trained for earnings only, so
its answers mean nothing): the checks are that predict, an analysis and an intervention run
unchanged and that their numbers are finite and consistent. The demo vocabulary has no
" yes"/" no" tokens, so its answer words are " liabilities"/" profit", labelled yes/no.
Consistency is checked exactly: swapping the two answer words negates every logit
difference and every contribution bit for bit (a - b == -(b - a) in floating point).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from finwidget import load_demo_model
from finwidget.analysis import decision_pathway
from finwidget.demo import make_statements
from finwidget.errors import AnswerWordError, InputError
from finwidget.interventions import sweep_heads
from finwidget.task import DEFAULT_ANSWERS, DEFAULT_QUESTION, LABELS, EarningsTask, TwoAnswerTask, predict

GOING_CONCERN = "Question: Is the going-concern risk high?"


@pytest.fixture(scope="module")
def demo():
    return load_demo_model()


@pytest.fixture(scope="module")
def statements():
    return [s.text for s in make_statements(3, seed=11)]


def going_concern(tokenizer, swapped=False):
    answers, labels = (" liabilities", " profit"), ("yes", "no")
    if swapped:
        answers, labels = answers[::-1], labels[::-1]
    return TwoAnswerTask(tokenizer, question=GOING_CONCERN, answers=answers, labels=labels)


def test_earnings_task_is_the_two_answer_task_with_its_question_and_words(demo, statements):
    model, tokenizer = demo
    earnings = EarningsTask(tokenizer)
    general = TwoAnswerTask(tokenizer, question=DEFAULT_QUESTION, answers=DEFAULT_ANSWERS, labels=LABELS,
                            chat_answer_prefix="Earnings will")
    assert isinstance(earnings, TwoAnswerTask)
    assert earnings.labels == LABELS and earnings.answer_token_ids == general.answer_token_ids
    assert earnings.prompt(statements[0]) == general.prompt(statements[0])
    # same prompts, same batch, same forward: identical predictions
    assert predict(model, tokenizer, statements) == predict(model, tokenizer, statements, task=general)
    assert predict(model, tokenizer, statements) == predict(model, tokenizer, statements, task=earnings)


def test_predict_answers_the_going_concern_question(demo, statements):
    model, tokenizer = demo
    task = going_concern(tokenizer)
    assert task.prompt(statements[0]).endswith(f"\n{GOING_CONCERN}\nAnswer:")
    predictions = predict(model, tokenizer, statements, task=task)
    swapped = predict(model, tokenizer, statements, task=going_concern(tokenizer, swapped=True))
    batch = task.encode(statements)
    logits = task.answer_logits(model, batch)                                   # [B, vocab]
    yes, no = task.answer_token_ids
    for row, (p, q) in enumerate(zip(predictions, swapped)):
        assert math.isfinite(p.logit_diff) and p.label in ("yes", "no")
        assert p.label == ("yes" if p.logit_diff > 0 else "no")
        assert p.p_increase == pytest.approx(1 / (1 + math.exp(-p.logit_diff)), rel=1e-6)
        assert q.logit_diff == -p.logit_diff and q.label == p.label                # labels swapped with words
        # the readout is logit(" liabilities") - logit(" profit") of the model's own forward
        assert p.logit_diff == float(logits[row, yes].float() - logits[row, no].float())
    # the question changes the prompt, so the answer is not the earnings task's in disguise
    earnings = predict(model, tokenizer, statements)
    assert [p.n_tokens for p in predictions] != [e.n_tokens for e in earnings]


def test_an_analysis_runs_unchanged_on_the_going_concern_task(demo, statements):
    model, tokenizer = demo
    task, swapped = going_concern(tokenizer), going_concern(tokenizer, swapped=True)
    pathway = decision_pathway(model, task, statements[:2])
    mirror = decision_pathway(model, swapped, statements[:2])
    assert torch.isfinite(pathway.logit_diff).all()
    assert torch.equal(mirror.logit_diff, -pathway.logit_diff)
    assert (mirror.heads["contribution"].to_numpy() == -pathway.heads["contribution"].to_numpy()).all()
    assert math.isfinite(pathway.max_abs_error) and pathway.max_abs_error == mirror.max_abs_error


def test_an_intervention_runs_unchanged_on_the_going_concern_task(demo, statements):
    model, tokenizer = demo
    task, swapped = going_concern(tokenizer), going_concern(tokenizer, swapped=True)
    sweep = sweep_heads(model, task, statements[:2], mode="zero", progress=False)        # every head
    mirror = sweep_heads(model, swapped, statements[:2], mode="zero", progress=False)
    n_heads = model.config.num_hidden_layers * model.config.num_attention_heads
    assert len(sweep) == n_heads * 2
    for column in ("logit_diff", "clean_logit_diff", "change"):
        values = sweep[column].to_numpy()
        assert all(math.isfinite(v) for v in values)
        assert (mirror[column].to_numpy() == -values).all(), column
    assert (sweep["flipped"] == mirror["flipped"]).all()
    assert (sweep["change"].abs() > 0).any()                                     # zeroing heads does something


def test_bad_task_arguments_are_refused_by_name(demo):
    _, tokenizer = demo
    with pytest.raises(AnswerWordError, match="exactly two answer words"):
        TwoAnswerTask(tokenizer, question=GOING_CONCERN, answers=(" profit",))
    with pytest.raises(AnswerWordError, match="exactly two answer words"):
        TwoAnswerTask(tokenizer, question=GOING_CONCERN, answers=" profit")
    with pytest.raises(InputError, match="question"):
        TwoAnswerTask(tokenizer, question="  ", answers=(" profit", " liabilities"))
    with pytest.raises(InputError, match="labels"):
        TwoAnswerTask(tokenizer, question=GOING_CONCERN, answers=(" profit", " liabilities"), labels=("yes",))
    with pytest.raises(InputError, match="must differ"):
        TwoAnswerTask(tokenizer, question=GOING_CONCERN, answers=(" profit", " liabilities"), labels=("a", "a"))


# ------------------------------------------------------------------ answer words (issue: nothing silent)
@pytest.mark.parametrize(
    "word,read,why",
    [
        ("increase", "in", "only the start of a word"),          # demo vocab: "in" + "crease"
        ("\u00a0increase", "\ufffd", "a partial character"),     # no-break space: a lone UTF-8 byte
        (" yes", " ", "whitespace only"),                        # " " + "y" + "es"
    ],
)
def test_demo_answer_words_whose_first_token_is_not_a_whole_word_are_refused(demo, word, read, why):
    model, tokenizer = demo
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AnswerWordError) as error:
        EarningsTask(tokenizer, answers=(word, " decrease"))
    message = str(error.value)
    assert repr(read) in message and why in message
    if word.strip() == "increase":
        assert "did you mean ' increase' with its leading space?" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_multi_token_answer_word_warns_once_naming_the_token_read(demo):
    _, tokenizer = demo
    # " income statement": " income" is a whole-word token, then " statement"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = TwoAnswerTask(tokenizer, question=GOING_CONCERN, answers=(" income statement", " profit"))
    multi = [w for w in caught if "tokens with this tokenizer" in str(w.message)]
    assert len(multi) == 1 and "' income'" in str(multi[0].message)
    assert not task.answers_are_single_tokens
    assert task.answer_token_ids[0] == tokenizer.encode(" income", add_special_tokens=False)[0]


def test_single_token_answer_words_do_not_warn(demo):
    _, tokenizer = demo
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = EarningsTask(tokenizer)
    assert task.answers_are_single_tokens
