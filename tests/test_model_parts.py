"""The model-parts layer: geometry from the config, one index check, named sites."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from finwidget.errors import InputError, LocationError, LocationTypeError, UnsupportedModelError
from finwidget.model_parts import (
    ModelGeometry,
    check_index,
    decoder_layers,
    final_norm,
    head_output_site,
    hook_head_outputs,
    residual_stream_site,
    unembedding,
)


@pytest.fixture(scope="module")
def model(peaky_qwen2):
    return peaky_qwen2(layers=3, heads=4, kv_heads=2, hidden=64)


def test_geometry_is_read_from_the_config(model):
    geometry = ModelGeometry.of(model)
    assert (geometry.num_layers, geometry.num_heads, geometry.num_kv_heads, geometry.head_dim,
            geometry.hidden_size) == (3, 4, 2, 16, 64)
    assert geometry.group_size == 2
    assert [geometry.kv_head_of(h) for h in range(4)] == [0, 0, 1, 1]
    assert geometry.query_heads_of(1) == [2, 3]
    assert geometry.architecture == "Qwen2ForCausalLM"
    from finwidget.interventions import HeadGeometry
    from finwidget.interventions.anatomy import HeadGeometry as OldHome

    assert HeadGeometry is ModelGeometry and OldHome is ModelGeometry


@pytest.mark.parametrize("value", [2, np.int64(2), np.int32(-1), torch.tensor(2)])
def test_integer_scalars_are_accepted(value):
    assert check_index(value, 3, "layer") == 2


@pytest.mark.parametrize("value", [1.0, True, "1", None, torch.tensor(1.0), np.float64(1)])
def test_non_integers_are_type_errors(value):
    with pytest.raises(LocationTypeError, match="layer must be an int") as caught:
        check_index(value, 3, "layer")
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, LocationError)


def test_out_of_range_names_the_range(model):
    with pytest.raises(LocationError, match=r"layer 3 is out of range: valid layers are 0\.\.2; this model has 3"):
        check_index(3, 3, "layer", "this model has 3 layers")
    with pytest.raises(LocationError, match="out of range"):
        check_index(-1, 3, "layer", negative=False)
    with pytest.raises(LocationError, match="must be >= 0"):
        check_index(-1, None, "head", negative=False)
    geometry = ModelGeometry.of(model)
    with pytest.raises(LocationError, match=r"head 4 of layer 1 is out of range.*sharing 2 key/value heads"):
        geometry.check_head(1, 4)
    with pytest.raises(LocationError, match="looks like a query-head index"):
        geometry.check_kv_head(3)
    assert geometry.check_layer(-1, negative=True) == 2


def test_sites_and_one_head_output_hook(model):
    assert head_output_site(model, 1) is decoder_layers(model)[1].self_attn.o_proj
    assert residual_stream_site(model, 2) is decoder_layers(model)[2]
    assert final_norm(model) is model.model.norm and unembedding(model) is model.lm_head
    seen = {}

    def make_hook(layer):
        def hook(module, args):
            seen[layer] = tuple(args[0].shape)
        return hook

    handles = hook_head_outputs(model, [0, 2], make_hook)
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[3, 4, 5]]))
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {0: (1, 3, 64), 2: (1, 3, 64)}  # [B, T, H*D]
    before = sum(len(m._forward_pre_hooks) for m in model.modules())
    with pytest.raises(IndexError):  # layer 7 does not exist: nothing stays registered
        hook_head_outputs(model, [0, 7], make_hook)
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == before


def test_unsupported_model_names_the_architecture_and_the_part():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(UnsupportedModelError, match=r"GPT2LMHeadModel has no decoder stack") as caught:
        head_output_site(model, 0)
    assert isinstance(caught.value, InputError)
    with pytest.raises(UnsupportedModelError, match="num_attention_heads"):
        ModelGeometry.of(SimpleNamespace(config=SimpleNamespace(hidden_size=8)))
