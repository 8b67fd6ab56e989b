"""The task, the capture and the explorer's protocol with Qwen2's real tokenizer.

The model is a small random Qwen2 with Qwen2's vocabulary (151,646 tokens, hidden 32),
so prompts go through Qwen2's own BPE and chat template: special tokens, digits one per
token, "<|im_start|>assistant" before the answer. Tolerances are measured in the test
(reference_drift.py) or the comparisons are on the same path.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import qwen2_tokenizer
import torch
from helpers import sharpen_attention
from reference_drift import cross_path_tolerance, max_difference_on_real_rows
from transformers import Qwen2Config, Qwen2ForCausalLM

from finwidget.capture import capture_attention
from finwidget.demo import make_statements
from finwidget.errors import AnswerWordError
from finwidget.interventions.spec import HeadIntervention, InterventionSet
from finwidget.task import EarningsTask, TwoAnswerTask, predict
from finwidget.widgets import AttentionExplorer
from finwidget.widgets.protocol import decode_array

qwen2_tok = qwen2_tokenizer.qwen2_tok  # pytest fixture: Qwen2's tokenizer (fails if it cannot be built)


@pytest.fixture(scope="module")
def model(qwen2_tok):
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(qwen2_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=qwen2_tok.pad_token_id)
    return sharpen_attention(Qwen2ForCausalLM(config).eval(), 40.0)   # wrong rows cannot hide in uniform ones


@pytest.fixture(scope="module")
def statements():
    return [s.text for s in make_statements(2, seed=4)]


def test_earnings_task_uses_qwen2s_chat_template_and_single_token_answers(qwen2_tok, statements):
    task = EarningsTask(qwen2_tok)
    assert task.use_chat_template and task.answers_are_single_tokens
    assert task.answer_token_ids == (5263, 18472)                  # " increase", " decrease" in Qwen2
    prompt = task.prompt(statements[0])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("next year?<|im_end|>\n<|im_start|>assistant\nEarnings will")
    batch = task.encode(statements)
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert ids[0] == 151644 and ids.count(151645) == 2             # <|im_start|> ... two <|im_end|>
    assert qwen2_tok.decode(ids) == prompt                         # the prompt round-trips exactly


def test_answer_words_on_qwen2s_vocabulary(qwen2_tok):
    # "decrease" without its space is "de" + "crease": refused, with the fix
    with pytest.raises(AnswerWordError, match=r"'de'.*did you mean ' decrease' with its leading space\?"):
        EarningsTask(qwen2_tok, answers=(" increase", "decrease"))
    # a no-break space is its own token in Qwen2: whitespace only, refused
    with pytest.raises(AnswerWordError, match=r"whitespace only.*did you mean ' increase'"):
        EarningsTask(qwen2_tok, answers=("\u00a0increase", " decrease"))
    # "increase" without its space is a whole-word token of Qwen2 ("increase", id 78501): accepted,
    # and read from that token (what the model would say without a space before it)
    task = EarningsTask(qwen2_tok, answers=("increase", " decrease"))
    assert task.answer_token_ids[0] == 78501 and task.answers_are_single_tokens
    yes_no = TwoAnswerTask(qwen2_tok, question="Question: Is the going-concern risk high?", answers=(" yes", " no"))
    assert yes_no.answer_token_ids == (9834, 902) and yes_no.labels == ("yes", "no")


def test_predict_reads_the_models_own_answer_logits(model, qwen2_tok, statements):
    task = TwoAnswerTask(qwen2_tok, question="Question: Is the going-concern risk high?", answers=(" yes", " no"))
    predictions = predict(model, qwen2_tok, statements, task=task)
    for statement, prediction in zip(statements, predictions):
        batch = task.encode(statement)
        logits = task.answer_logits(model, batch)[0]              # same path, one statement
        assert prediction.n_tokens == batch["input_ids"].shape[1]
        assert math.isfinite(prediction.logit_diff)
        assert prediction.label == ("yes" if prediction.logit_diff > 0 else "no")
        single = float(logits[9834].float() - logits[902].float())
        alone = predict(model, qwen2_tok, statement, task=task).logit_diff
        assert alone == single


def test_capture_on_qwen2_prompts_matches_eager(model, qwen2_tok, statements):
    batch = EarningsTask(qwen2_tok).encode(statements)            # left-padded, two lengths
    mask = batch["attention_mask"]
    assert mask.sum(dim=1).unique().numel() == 2
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            reference = model(**batch, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(original)
    with torch.no_grad(), capture_attention(model) as cap:
        model(**batch)
    recorded = [torch.stack([cap.attention(layer, batch=row) for row in range(len(statements))])
                for layer in cap.layers]
    # two float32 paths (SDPA recorded, eager reference): within 2 x eager's measured float32 drift
    assert max_difference_on_real_rows(recorded, reference, mask) < cross_path_tolerance(model, batch, reference)
    peaks = torch.cat([r[row][:, mask[row].bool()].max(dim=-1).values.flatten()
                       for r in reference for row in range(len(statements))])
    assert (peaks > 0.9).float().mean() > 0.3            # sharp rows: a wrong row or mask would show


def test_explorer_protocol_on_qwen2s_tokenizer(model, qwen2_tok, statements):
    explorer = AttentionExplorer(model, qwen2_tok, statements[0])
    session = explorer.session
    assert session.seq_len == EarningsTask(qwen2_tok).encode(statements[0])["input_ids"].shape[1]
    clean = explorer.prediction["clean"]
    assert math.isfinite(clean["logit_diff"]) and clean["label"] == ("increase" if clean["logit_diff"] > 0
                                                                     else "decrease")
    numbers = [s for s in session.layout.spans if s.kind == "number" and s.in_statement]
    assert numbers, "the reader finds the statement's numbers in Qwen2's digit-per-token encoding"
    reply, buffers = explorer.handle_request({"id": 7, "kind": "head_matrix", "layer": 1, "head": 2,
                                              "encoding": "f16"})
    assert reply["ok"] and reply["id"] == 7
    shown = decode_array(reply["arrays"]["matrix"], buffers)
    exact = session.capture.head_matrix(1, 2).numpy()
    assert shown.shape == exact.shape == (session.seq_len, session.seq_len)
    # float16 transport: each value is rounded to float16 (half an ulp, 2**-11 relative)
    assert np.all(np.abs(shown - exact) <= np.abs(exact) * 2.0**-11 + 2.0**-25)
    # the clean answer is the Python API's, bit for bit (same forward path)
    task = EarningsTask(qwen2_tok)
    batch = task.encode(statements[0])
    assert clean["logit_diff"] == float(task.logit_diff(task.answer_logits(model, batch))[0])


def test_explorer_ablation_on_qwen2s_tokenizer_answers_with_the_python_apis_number(model, qwen2_tok, statements):
    explorer = AttentionExplorer(model, qwen2_tok, statements[1])
    task = EarningsTask(qwen2_tok)
    batch = task.encode(statements[1])
    exact_model = copy.deepcopy(model).double()
    for ablation, intervention in (
        ({"layer": 0, "head": 1, "mode": "zero"}, HeadIntervention(0, 1, "zero")),
        ({"layer": 1, "head": 2, "mode": "scale", "value": 3.0}, HeadIntervention(1, 2, "scale", value=3.0)),
    ):
        reply, _ = explorer.handle_request({"id": 8, "kind": "set_ablations", "ablations": [ablation]})
        assert reply["ok"] and reply["id"] == 8
        shown = reply["prediction"]["ablated"]["logit_diff"]
        with InterventionSet([intervention]).applied(model):
            full = float(task.logit_diff(task.answer_logits(model, batch))[0])
        with InterventionSet([intervention]).applied(exact_model):
            exact = float(task.logit_diff(task.answer_logits(exact_model, batch))[0])
        # The widget resumes from cached layers, the API runs the whole model: two float32 paths,
        # each about as far from the float64 value as the API's measured drift, plus the rounding
        # of the float32 result itself (an ulp of its size).
        drift = abs(full - exact)
        ulp = float(torch.finfo(torch.float32).eps) * max(abs(full), abs(exact))
        assert abs(shown - full) <= 2 * drift + 2 * ulp, (shown, full, exact)
        assert shown != reply["prediction"]["clean"]["logit_diff"]
