"""The decision pathway: logit lens per layer and each head's direct contribution.

The contributions are checked by what they must add up to: the model's own logit
difference. The check fails if a head's slice, the o_proj weight columns, the frozen
final-norm scale or any residual component is wrong.

Tolerances are measured: ``logit_diff_tolerance`` (reference_drift.py) bounds two float32
paths to the logit difference by twice a plain forward's measured distance from the float64
value; adding K float32 contributions rounds by at most K ulps of their absolute sum.
"""

from __future__ import annotations

import copy

import pytest
import torch
from reference_drift import logit_diff_tolerance

from finwidget.analysis import decision_pathway, head_direct_contributions, logit_lens
from finwidget.errors import InputError
from finwidget.task import EarningsTask

STATEMENTS = [
    (
        "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370\n"
        "Operating cash flow: change +2,210 | 2022: 9,876 | 2021: 7,666\n"
        "Question: Will earnings increase or decrease next year?"
    ),
    "Revenue: change 5,012 | 2022: 120,456 | 2021: 115,444",
    "Net income: change 12 | 2022: 99 | 2021: 87",
]


@pytest.fixture(scope="module")
def setup(analysis_qwen2, qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    model = analysis_qwen2(len(tokenizer), seed=1, sharpness=4.0, layers=3, heads=6, kv_heads=2)
    with torch.no_grad():  # a larger unembedding difference, so errors are not hidden by small numbers
        model.lm_head.weight.mul_(20.0)
    return tokenizer, EarningsTask(tokenizer), model


def model_logit_diff(model, task, batch):
    with torch.no_grad():
        logits = model(**batch).logits[:, -1, :]
    return task.logit_diff(logits)


EPS = torch.finfo(torch.float32).eps


def summation_rounding(values) -> float:
    """Bound on the float32 rounding of a sum of ``values``: n ulps of their absolute sum."""
    return len(values) * EPS * float(abs(values).sum())


def test_contributions_add_up_to_the_logit_difference(setup):
    _tokenizer, task, model = setup
    batch = task.encode(STATEMENTS)
    actual = model_logit_diff(model, task, batch)
    assert float(actual.abs().max()) > 0.5  # a non-trivial target

    pathway = decision_pathway(model, task, batch)
    tolerance = logit_diff_tolerance(model, task, batch, actual)                  # [B]
    assert ((pathway.logit_diff - actual).abs().double() <= tolerance).all()
    heads = pathway.heads
    config = model.config
    assert len(heads) == len(STATEMENTS) * config.num_hidden_layers * config.num_attention_heads
    assert (heads["kv_head"] == heads["head"] // (config.num_attention_heads // config.num_key_value_heads)).all()
    for b in range(len(STATEMENTS)):
        parts = pathway.components[pathway.components.statement == b]
        total = parts["contribution"].sum()
        closure = float(tolerance[b]) + summation_rounding(parts["contribution"].to_numpy())
        assert total == pytest.approx(float(actual[b]), abs=closure)
        # "attention" rows are the sums of that layer's heads
        for layer in range(config.num_hidden_layers):
            layer_heads = heads[(heads.statement == b) & (heads.layer == layer)]["contribution"]
            row = parts[(parts.component == "attention") & (parts.layer == layer)]["contribution"]
            assert float(row.iloc[0]) == pytest.approx(layer_heads.sum(),
                                                       abs=summation_rounding(layer_heads.to_numpy()))
    worst = max(float(tolerance[b]) + summation_rounding(
        pathway.components[pathway.components.statement == b]["contribution"].to_numpy()) for b in range(3))
    assert pathway.max_abs_error <= worst


def test_a_silenced_heads_contribution_is_zero(setup):
    """Zero one head's o_proj columns: its direct contribution must become 0, the others
    still add up to the (changed) logit difference."""
    _tokenizer, task, model = setup
    batch = task.encode(STATEMENTS[:2])
    layer, head = 2, 4
    d = model.config.hidden_size // model.config.num_attention_heads
    o_proj = model.model.layers[layer].self_attn.o_proj
    saved = o_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            o_proj.weight[:, head * d:(head + 1) * d] = 0.0
        pathway = decision_pathway(model, task, batch)
        actual = model_logit_diff(model, task, batch)
        tolerance = logit_diff_tolerance(model, task, batch, actual)
    finally:
        with torch.no_grad():
            o_proj.weight.copy_(saved)
    silenced = pathway.heads[(pathway.heads.layer == layer) & (pathway.heads["head"] == head)]
    assert silenced["contribution"].abs().max() == 0.0
    for b in range(2):
        parts = pathway.components[pathway.components.statement == b]["contribution"].to_numpy()
        assert parts.sum() == pytest.approx(float(actual[b]), abs=float(tolerance[b]) + summation_rounding(parts))


def test_logit_lens_ends_at_the_models_answer(setup):
    _tokenizer, task, model = setup
    lens = logit_lens(model, task, STATEMENTS)
    assert list(lens[lens.statement == 0]["layer"]) == [-1, 0, 1, 2]
    assert list(lens[lens.statement == 0]["stage"]) == ["embeddings", "layer_0", "layer_1", "layer_2"]
    batch = task.encode(STATEMENTS)
    actual = model_logit_diff(model, task, batch)
    last = lens[lens.layer == model.config.num_hidden_layers - 1].sort_values("statement")["logit_diff"]
    gap = (torch.tensor(last.to_numpy(), dtype=torch.float64) - actual.double()).abs()
    assert (gap <= logit_diff_tolerance(model, task, batch, actual)).all()
    assert ((lens["p_increase"] > 0) & (lens["p_increase"] < 1)).all()


def test_one_statement_as_text_equals_its_batch_row(setup):
    tokenizer, task, model = setup
    alone = head_direct_contributions(model, tokenizer, STATEMENTS[1])
    batched = head_direct_contributions(model, task, STATEMENTS)
    row = batched[batched.statement == 1].reset_index(drop=True)
    # left padding only shifts positions; RoPE is relative, so the numbers agree to float rounding:
    # within twice the alone run's measured distance from the same contributions in float64
    exact = head_direct_contributions(copy.deepcopy(model).double(), tokenizer, STATEMENTS[1])
    alone_values, row_values = alone["contribution"].to_numpy(), row["contribution"].to_numpy()
    drift = abs(alone_values - exact["contribution"].to_numpy()).max()
    assert drift > 0
    assert (abs(alone_values - row_values) <= 2 * drift + 2 * EPS * abs(alone_values)).all()


def test_hooks_are_removed_and_the_model_unchanged(setup):
    _tokenizer, task, model = setup
    batch = task.encode(STATEMENTS)
    before = model(**batch).logits.detach()
    model.train()
    decision_pathway(model, task, batch)
    assert model.training  # the training flag is restored
    model.eval()
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    with pytest.raises(InputError):
        decision_pathway(model, task, {"attention_mask": batch["attention_mask"]})
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    after = model(**batch).logits.detach()
    assert torch.equal(before, after)


def test_hooks_are_removed_when_the_forward_pass_fails(setup):
    tokenizer, task, model = setup
    batch = task.encode(STATEMENTS[:1])
    too_big = {"input_ids": torch.full_like(batch["input_ids"], len(tokenizer) + 50),
               "attention_mask": batch["attention_mask"]}
    with pytest.raises(IndexError):
        decision_pathway(model, task, too_big)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_unsupported_model_layout_is_refused(qwen_like_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = qwen_like_tokenizer
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).eval()
    with pytest.raises(InputError, match="decoder layout"):
        decision_pathway(model, tokenizer, STATEMENTS[2])


def test_geometry_comes_from_the_config(qwen2_config, qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    torch.manual_seed(3)
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM(qwen2_config(len(tokenizer), layers=2, heads=8, kv_heads=4, head_dim=8)).eval()
    pathway = decision_pathway(model, tokenizer, STATEMENTS[2])
    assert sorted(pathway.heads["head"].unique()) == list(range(8))
    task = EarningsTask(tokenizer)
    batch = task.encode(STATEMENTS[2])
    tolerance = logit_diff_tolerance(model, task, batch, model_logit_diff(model, task, batch))
    assert pathway.max_abs_error <= float(tolerance[0]) + summation_rounding(
        pathway.components["contribution"].to_numpy())


def test_bfloat16_model_is_read_within_its_rounding():
    """Qwen2-7B runs in bfloat16 on GPUs: the checks allow bf16 rounding, and the sum of
    contributions still lands near the model's own logit difference."""
    from finwidget import load_demo_model
    from finwidget.demo import make_statements

    model, tokenizer = load_demo_model()
    model = model.to(torch.bfloat16)
    task = EarningsTask(tokenizer)
    pathway = decision_pathway(model, task, task.encode(make_statements(1, seed=5)[0].text))
    scale = float(pathway.logit_diff.abs().max()) + 1.0
    assert pathway.max_abs_error < 0.05 * scale
    assert len(pathway.heads) == model.config.num_hidden_layers * model.config.num_attention_heads
