"""The training forward pass that runs the last layer only at the answer position
gives the same logits (and gradients flow to the same weights) as the full model.

Two float32 paths: the tolerance is twice the full forward's measured distance from a
float64 copy of the model plus two ulps of the largest value (reference_drift.py).
"""

import copy

import pytest
import torch
from reference_drift import float64_logits, logits_tolerance

from finwidget.demo.answer_forward import answer_position_logits


def _random_qwen2(layers: int, heads: int, kv_heads: int, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # larger weights give peaky attention, which shows indexing mistakes
        for parameter in model.parameters():
            parameter.mul_(5.0)
    return model


def _left_padded_batch(lengths, width, vocab, seed=1):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, width - length:] = 1
        input_ids[row, :width - length] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize("layers, heads, kv_heads", [(1, 4, 2), (2, 4, 2), (3, 6, 2), (2, 4, 4)])
def test_same_logits_as_the_full_forward(layers, heads, kv_heads):
    model = _random_qwen2(layers, heads, kv_heads)
    input_ids, attention_mask = _left_padded_batch([20, 13, 7], 20, model.config.vocab_size)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1).logits[:, -1]
        fast = answer_position_logits(model, input_ids, attention_mask)
    assert fast.shape == (3, model.config.vocab_size)
    exact = float64_logits(model, input_ids, attention_mask)[:, -1]
    assert (fast - full).abs().max() <= logits_tolerance(full, exact), (fast - full).abs().max()


def test_without_padding_mask():
    model = _random_qwen2(2, 4, 2)
    input_ids, _ = _left_padded_batch([16, 16], 16, model.config.vocab_size)
    with torch.no_grad():
        full = model(input_ids=input_ids, logits_to_keep=1).logits[:, -1]
        fast = answer_position_logits(model, input_ids, None)
    exact = float64_logits(model, input_ids)[:, -1]
    assert (fast - full).abs().max() <= logits_tolerance(full, exact)


def test_same_gradients_as_the_full_forward():
    model = _random_qwen2(2, 4, 2)
    input_ids, attention_mask = _left_padded_batch([12, 9], 12, model.config.vocab_size)
    targets = torch.tensor([3, 5])
    grads = []
    for forward in (
        lambda: model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1).logits[:, -1],
        lambda: answer_position_logits(model, input_ids, attention_mask),
    ):
        model.zero_grad()
        torch.nn.functional.cross_entropy(forward(), targets).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    # float64 gradients of the same loss, each statement run alone (float64 padding rows turn NaN)
    model64 = copy.deepcopy(model).double()
    model64.zero_grad()
    for row in range(len(targets)):
        real = attention_mask[row].bool()
        logits = model64(input_ids=input_ids[row][real][None], logits_to_keep=1).logits[:, -1]
        (torch.nn.functional.cross_entropy(logits, targets[row:row + 1]) / len(targets)).backward()
    exact = {n: p.grad for n, p in model64.named_parameters() if p.grad is not None}
    for name in grads[0]:
        drift = float((grads[0][name].double() - exact[name]).abs().max())
        tolerance = 2 * drift + 2 * torch.finfo(torch.float32).eps * float(exact[name].abs().max())
        assert (grads[0][name] - grads[1][name]).abs().max() <= tolerance, name
