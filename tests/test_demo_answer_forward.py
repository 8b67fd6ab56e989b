"""The training forward pass that runs the last layer only at the answer position
gives the same logits (and gradients flow to the same weights) as the full model."""

import pytest
import torch

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
    assert torch.allclose(fast, full, atol=1e-4, rtol=1e-4), (fast - full).abs().max()


def test_without_padding_mask():
    model = _random_qwen2(2, 4, 2)
    input_ids, _ = _left_padded_batch([16, 16], 16, model.config.vocab_size)
    with torch.no_grad():
        full = model(input_ids=input_ids, logits_to_keep=1).logits[:, -1]
        fast = answer_position_logits(model, input_ids, None)
    assert torch.allclose(fast, full, atol=1e-4, rtol=1e-4)


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
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-3), name
