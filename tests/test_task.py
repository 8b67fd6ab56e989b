"""The earnings task: prompts, answer words, batched readout and bad input."""

import math

import pytest
import torch
from reference_drift import logit_diff_tolerance
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from finwidget import EarningsTask, predict
from finwidget.demo import MODEL_DIR
from finwidget.errors import AnswerWordError, InputError
from finwidget.task import DEFAULT_QUESTION

STATEMENT = "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370\nRevenue: change +2,100 | 2022: 52,300 | 2021: 50,200"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    return Qwen2ForCausalLM(config).eval()


def test_plain_prompt_adds_question_once(tokenizer):
    task = EarningsTask(tokenizer)
    prompt = task.prompt(STATEMENT)
    assert prompt.endswith(f"{DEFAULT_QUESTION}\nAnswer:")
    assert task.prompt(prompt.removesuffix("\nAnswer:")) == prompt


def test_answer_words_are_single_tokens(tokenizer):
    task = EarningsTask(tokenizer)
    assert task.answers_are_single_tokens
    inc, dec = task.answer_token_ids
    assert tokenizer.decode([inc]) == " increase" and tokenizer.decode([dec]) == " decrease"


def test_answer_words_sharing_a_first_token_are_refused(tokenizer):
    with pytest.raises(AnswerWordError, match="start with the same token"):
        EarningsTask(tokenizer, answers=(" increase", " increase"))


def test_empty_answer_word_is_refused(tokenizer):
    with pytest.raises(AnswerWordError, match="non-empty string"):
        EarningsTask(tokenizer, answers=(" increase", " "))


def test_chat_template_used_for_instruct_tokenizers(tokenizer):
    chat_tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    chat_tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    task = EarningsTask(chat_tokenizer)
    assert task.use_chat_template
    assert task.prompt(STATEMENT) == f"<|user|>{STATEMENT}\n{DEFAULT_QUESTION}\n<|assistant|>Earnings will"
    assert not EarningsTask(chat_tokenizer, use_chat_template=False).use_chat_template


def test_encode_left_pads_so_the_answer_is_the_last_column(tokenizer):
    task = EarningsTask(tokenizer)
    batch = task.encode([STATEMENT, "Revenue: change +5 | 2022: 10 | 2021: 5"])
    mask = batch["attention_mask"]
    assert mask[:, -1].tolist() == [1, 1]
    assert mask[1, 0] == 0 and mask[0].all()
    single = task.encode("Revenue: change +5 | 2022: 10 | 2021: 5")["input_ids"][0]
    assert batch["input_ids"][1, -len(single):].tolist() == single.tolist()


def test_predict_single_and_batch_agree(model, tokenizer):
    texts = [STATEMENT, "Revenue: change +5 | 2022: 10 | 2021: 5", "Net income: change +7 | 2022: 17 | 2021: 10"]
    one_by_one = [predict(model, tokenizer, t) for t in texts]
    batched = predict(model, tokenizer, texts, batch_size=2)
    assert len(batched) == 3
    # alone vs left-padded in a batch: two float32 paths, within twice the alone run's measured
    # distance from the float64 value plus two ulps of the logits (reference_drift.py)
    task = EarningsTask(tokenizer)
    for text, a, b in zip(texts, one_by_one, batched):
        tolerance = float(logit_diff_tolerance(model, task, task.encode(text), torch.tensor([a.logit_diff]))[0])
        assert abs(a.logit_diff - b.logit_diff) <= tolerance
        assert a.label == b.label and a.n_tokens == b.n_tokens
        # float32 sigmoid vs float64: a few ulps of 1.0
        assert abs(b.p_increase - 1 / (1 + math.exp(-b.logit_diff))) <= 4 * torch.finfo(torch.float32).eps
        assert b.label == ("increase" if b.logit_diff > 0 else "decrease")


def test_predict_reads_the_answer_logits(model, tokenizer):
    task = EarningsTask(tokenizer)
    batch = task.encode(STATEMENT)
    with torch.no_grad():
        logits = model(**batch).logits[0, -1]
    inc, dec = task.answer_token_ids
    plain = float(logits[inc] - logits[dec])
    # predict keeps only the last position's logits: another float32 path than all positions'
    tolerance = float(logit_diff_tolerance(model, task, batch, torch.tensor([plain]))[0])
    assert abs(predict(model, tokenizer, STATEMENT).logit_diff - plain) <= tolerance


def test_predict_restores_training_flag(model, tokenizer):
    model.train()
    try:
        predict(model, tokenizer, STATEMENT)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "empty"),
        ("   \n\t", "empty"),
        ([], "list of statements is empty"),
        (42, "expected a str or a list of str, got int"),
        (["ok text", 3], "statement 1 must be a str"),
        (["ok text", ""], "statement 1 is empty"),
    ],
)
def test_bad_input_is_named_and_model_untouched(model, tokenizer, bad, message):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match=message):
        predict(model, tokenizer, bad)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_text_beyond_context_says_length_and_limit(model, tokenizer):
    long_text = "Revenue: change +5 | 2022: 10 | 2021: 5\n" * 40
    with pytest.raises(InputError, match=r"prompt is \d+ tokens, longer than the model's context of 128"):
        predict(model, tokenizer, long_text)
    truncated = predict(model, tokenizer, long_text, truncate=True)
    assert truncated.n_tokens == 128


def test_bad_batch_size(model, tokenizer):
    with pytest.raises(InputError, match="batch_size"):
        predict(model, tokenizer, STATEMENT, batch_size=0)
