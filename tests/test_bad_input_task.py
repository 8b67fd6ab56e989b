"""Bad-input catalogue: the task (prompts, encoding, ``predict``, the readout). Each case names
the finwidget error it must raise and checks the demo model is untouched. (Answer words have
their own tests in ``test_task.py``.)"""

from __future__ import annotations

import math

import pytest
import torch
from bad_input_common import accepted, refused

from finwidget.demo import load_demo_model
from finwidget.errors import AnswerWordError, InputError, NonFiniteError
from finwidget.task import EarningsTask, predict

CASES = [
    ("task a string", lambda m, k, t, x: predict(m, k, x, task="earnings"), InputError, "EarningsTask"),
    ("task a dict", lambda m, k, t, x: predict(m, k, x, task={}), InputError, "EarningsTask"),
    ("text None", lambda m, k, t, x: predict(m, k, None), InputError, "str"),
    ("text bytes", lambda m, k, t, x: predict(m, k, x.encode()), InputError, "str"),
    ("text a number", lambda m, k, t, x: predict(m, k, 5), InputError, "str"),
    ("texts with None", lambda m, k, t, x: predict(m, k, [x, None]), InputError, "statement 1"),
    ("texts empty", lambda m, k, t, x: predict(m, k, []), InputError, "empty"),
    ("texts a generator", lambda m, k, t, x: predict(m, k, (s for s in [x])), InputError, "generator"),
    ("text only spaces", lambda m, k, t, x: predict(m, k, " \n\t "), InputError, "empty"),
    ("one text only spaces", lambda m, k, t, x: predict(m, k, [x, "  "]), InputError, "statement 1"),
    ("lone surrogate", lambda m, k, t, x: predict(m, k, x + "\ud800"), InputError, "surrogate"),
    ("lone surrogate in a batch", lambda m, k, t, x: predict(m, k, [x, "Revenue \udcff 5"]), InputError, "surrogate"),
    ("batch_size 0", lambda m, k, t, x: predict(m, k, x, batch_size=0), InputError, "batch_size"),
    ("batch_size a float", lambda m, k, t, x: predict(m, k, x, batch_size=2.0), InputError, "batch_size"),
    ("batch_size a bool", lambda m, k, t, x: predict(m, k, x, batch_size=True), InputError, "batch_size"),
    ("truncate a string", lambda m, k, t, x: predict(m, k, x, truncate="yes"), InputError, "truncate"),
    ("prompt longer than the context", lambda m, k, t, x: predict(m, k, x * 40), InputError, "truncate=True"),
    ("max_length 0", lambda m, k, t, x: t.encode(x, max_length=0), InputError, "max_length"),
    ("max_length a float", lambda m, k, t, x: t.encode(x, max_length=10.5), InputError, "max_length"),
    ("max_length negative", lambda m, k, t, x: t.encode(x, max_length=-1, truncate=True), InputError, "max_length"),
    ("device gpu", lambda m, k, t, x: t.encode(x, device="gpu"), InputError, "torch device"),
    ("question None", lambda m, k, t, x: EarningsTask(k, question=None), InputError, "question"),
    ("answer_prefix a number", lambda m, k, t, x: EarningsTask(k, answer_prefix=5), InputError, "answer_prefix"),
    ("system_prompt a list", lambda m, k, t, x: EarningsTask(k, system_prompt=["be nice"]), InputError,
     "system_prompt"),
    ("use_chat_template 'yes'", lambda m, k, t, x: EarningsTask(k, use_chat_template="yes"), InputError,
     "use_chat_template"),
    ("use_chat_template without a template", lambda m, k, t, x: EarningsTask(k, use_chat_template=True), InputError,
     "no chat template"),
    ("tokenizer None", lambda m, k, t, x: EarningsTask(None), InputError, "tokenizer"),
    ("tokenizer a string", lambda m, k, t, x: EarningsTask("Qwen/Qwen2-0.5B"), InputError, "tokenizer"),
    ("one answer word", lambda m, k, t, x: EarningsTask(k, answers=(" increase",)), AnswerWordError, "two"),
    ("answer words alike", lambda m, k, t, x: EarningsTask(k, answers=(" increase", " increase")), AnswerWordError,
     "same token"),
    ("logits of another vocabulary", lambda m, k, t, x: t.logit_diff(torch.zeros(2, 10)), InputError, "vocab"),
    ("logits not a tensor", lambda m, k, t, x: t.logit_diff([1.0, 2.0]), InputError, "tensor"),
    ("NaN logits", lambda m, k, t, x: t.predictions(torch.full((1, 425), math.nan), torch.ones(1, 3)),
     NonFiniteError, "not finite"),
    ("inf logit", lambda m, k, t, x: t.predictions(
        torch.zeros(1, 425).index_fill_(1, torch.tensor([t.answer_token_ids[0]]), math.inf), torch.ones(1, 3)),
     NonFiniteError, "not finite"),
    ("model None", lambda m, k, t, x: predict(None, k, x), InputError, "config"),
    ("model a string", lambda m, k, t, x: predict("Qwen/Qwen2-0.5B", k, x), InputError, "config"),
]


@pytest.mark.parametrize("name,call,error,match", CASES, ids=[c[0] for c in CASES])
def test_bad_task_inputs_are_refused(demo, text, name, call, error, match):
    model, tokenizer, task = demo
    refused(model, error, lambda: call(model, tokenizer, task, text), match=match)


def test_a_tuple_of_statements_and_a_nul_character_are_read(demo, text):
    model, tokenizer, _task = demo
    assert accepted(model, lambda: predict(model, tokenizer, (text,)))[0] == predict(model, tokenizer, text)
    assert math.isfinite(predict(model, tokenizer, text + "\x00").logit_diff)


@pytest.mark.parametrize("answers", [None, 5, {" increase", " decrease"}, iter([" increase", " decrease"])])
def test_answers_that_are_not_a_pair_of_words_are_refused_by_name(answers):
    _, tokenizer = load_demo_model()
    with pytest.raises(AnswerWordError, match="exactly two answer words"):
        EarningsTask(tokenizer, answers=answers)
