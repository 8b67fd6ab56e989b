"""Bad input and failures: clear errors, and the model always left exactly as it was.

After every failure the model must run its original attention implementation with no
finwidget hook or route left, and give logits bit-identical to a fresh run.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import assert_model_clean, left_padded_batch, logits, registered_hooks
from reference_drift import float64_logits, logits_tolerance
from transformers import DynamicCache

from finwidget.capture import capture_attention
from finwidget.errors import CaptureStateError, InputError, LocationError


@pytest.fixture(scope="module")
def model(peaky_qwen2):
    return peaky_qwen2(seed=11)


@pytest.fixture(scope="module")
def batch():
    return left_padded_batch(lengths=(16, 11))


@pytest.fixture(scope="module")
def clean_logits(model, batch):
    return logits(model, batch)


@pytest.fixture(scope="module")
def capture(model, batch):
    with torch.no_grad(), capture_attention(model) as cap:
        model(**batch)
    return cap


@pytest.fixture
def hooks(model):
    return registered_hooks(model)


# ---------------------------------------------------------------------------- locations
def test_layer_out_of_range_names_the_valid_range(model, capture):
    with pytest.raises(LocationError, match=r"layer 3 is out of range: valid layers are 0\.\.2"):
        capture_attention(model, layers=[0, 3])
    with pytest.raises(LocationError, match=r"layer 7 is out of range: valid layers are 0\.\.2"):
        capture.attention(7, head=0)
    with pytest.raises(KeyError, match=r"'layer_9' is not a captured layer.*\(0\.\.2\)"):
        capture.attention_weights["layer_9"]


def test_head_out_of_range_names_query_and_kv_heads(capture):
    with pytest.raises(LocationError, match=r"query head 4 is out of range: valid query heads are 0\.\.3.*"
                                            r"4 query heads per layer sharing 2 key/value heads"):
        capture.attention(0, head=4)
    with pytest.raises(LocationError, match="query head 5 is out of range"):
        capture.attention_weights["layer_0"][0, 5]
    with pytest.raises(LocationError, match=r"query position 16 is out of range: valid query positions are 0\.\.15"):
        capture.attention(0, head=0, query=16)
    with pytest.raises(LocationError, match=r"batch row 2 is out of range"):
        capture.attention(0, head=0, batch=2)


def test_kv_head_given_a_query_head_index_says_so(capture):
    # 4 query heads over 2 KV heads: "3" is a valid query head but not a KV head.
    with pytest.raises(LocationError, match=r"KV head 3 is out of range: this model has only 2 key/value heads.*"
                                            r"looks like a query-head index: query head 3 reads KV head 1"):
        capture.keys(0, kv_head=3)
    with pytest.raises(LocationError, match="looks like a query-head index"):
        capture.attention(0, kv_head=2)
    with pytest.raises(InputError, match="either head .* or kv_head"):
        capture.attention(0, head=1, kv_head=0)
    assert capture.keys(0, kv_head=1).shape == (2, 16, 16)


def test_layer_not_captured(model, batch):
    with torch.no_grad(), capture_attention(model, layers=[1]) as cap:
        model(**batch)
    with pytest.raises(LocationError, match=r"layer 0 was not captured; captured layers: \[1\]"):
        cap.attention(0)


def test_bad_options_are_refused_before_touching_the_model(model, batch, clean_logits, hooks):
    with pytest.raises(InputError, match="store_on must be"):
        capture_attention(model, store_on="the cloud")
    with pytest.raises(InputError, match="store_dtype must be a floating torch dtype"):
        capture_attention(model, store_dtype=torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            capture_attention(model, store_on="cuda")
    with pytest.raises(InputError, match="method must be one of"):
        capture_attention(model, method="magic")
    with pytest.raises(InputError, match="layers is empty"):
        capture_attention(model, layers=[])
    with pytest.raises(InputError, match="needs a torch model"):
        capture_attention("Qwen/Qwen2-7B")
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


# ---------------------------------------------------------------------------- lifetime
def test_reading_before_running_and_after_release(model, batch):
    cap = capture_attention(model)
    with pytest.raises(CaptureStateError, match="has not run"):
        cap.attention(0)
    with torch.no_grad(), cap:
        model(**batch)
    assert cap.attention(0, head=0).shape == (16, 16)
    cap.release()
    with pytest.raises(CaptureStateError, match="was released"):
        cap.attention(0, head=0)
    with pytest.raises(CaptureStateError, match="was released"):
        _ = cap.attention_weights


def test_a_capture_cannot_be_entered_twice(model, batch, clean_logits, hooks):
    cap = capture_attention(model)
    with cap, pytest.raises(CaptureStateError, match="already entered"):
        cap.__enter__()
    with pytest.raises(CaptureStateError, match="already used and closed"), cap:
        pass
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


def test_nothing_recorded(model, batch, clean_logits, hooks):
    with capture_attention(model) as cap:
        pass
    with pytest.raises(CaptureStateError, match="nothing was recorded: run the model inside the with-block"):
        cap.attention(0)
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


# ---------------------------------------------------------------------------- failures inside the block
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_exception_in_the_block_restores_the_model(model, batch, clean_logits, hooks, error):
    with pytest.raises(type(error)), torch.no_grad(), capture_attention(model):
        model(**batch)
        raise error
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


def test_an_exception_inside_the_forward_pass_restores_the_model_and_marks_the_capture(
        model, batch, clean_logits, hooks):
    def fail_in_layer_1(*_):
        raise KeyboardInterrupt

    with torch.no_grad(), capture_attention(model) as cap:
        model(**batch)
    handle = model.model.layers[1].register_forward_pre_hook(fail_in_layer_1)
    try:
        with pytest.raises(KeyboardInterrupt), torch.no_grad(), capture_attention(model) as cap:
            model(**left_padded_batch(lengths=(9,), seed=3))       # layer 0 recorded, 1 and 2 not
    finally:
        handle.remove()
    with pytest.raises(CaptureStateError, match="did not finish"):
        cap.attention(0)
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


def test_a_generator_closed_mid_capture_restores_the_model(model, batch, clean_logits, hooks):
    def stream():
        with torch.no_grad(), capture_attention(model) as cap:
            model(**batch)
            yield cap
            yield cap

    running = stream()
    next(running)
    assert model.config._attn_implementation == "finwidget_record_sdpa"
    running.close()                                                      # GeneratorExit inside the block
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


def test_continuing_a_cache_filled_outside_the_capture_is_refused_when_read(model, batch, clean_logits, hooks):
    ids = left_padded_batch(lengths=(8,), seed=4)["input_ids"]
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :5], cache=cache, use_cache=True)
        with capture_attention(model) as cap:
            continued = model(input_ids=ids[:, 5:], cache=cache, use_cache=True).logits   # the model's work goes on
        whole = model(input_ids=ids).logits
    # cached decoding vs one full forward: within twice the full forward's measured float64 drift
    exact = float64_logits(model, ids)
    torch.testing.assert_close(continued, whole[:, 5:], rtol=0, atol=logits_tolerance(whole, exact))
    with pytest.raises(CaptureStateError, match="continues a KV cache that was filled outside the capture"):
        cap.attention(0)
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


def test_beam_search_reordering_is_detected_not_misread(model):
    prompt = left_padded_batch(lengths=(7,), seed=6)
    with torch.no_grad(), capture_attention(model) as cap:
        model.generate(**prompt, max_new_tokens=5, num_beams=3, do_sample=False, pad_token_id=0)
    with pytest.raises(CaptureStateError, match="reordered between decode steps \\(beam search\\)"):
        cap.attention(0)


def test_a_custom_non_causal_mask_is_refused_when_read(model):
    ids = left_padded_batch(lengths=(6,), seed=5)["input_ids"]
    block_diagonal = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    block_diagonal[..., :3, :3] = torch.ones(3, 3).tril().bool()
    block_diagonal[..., 3:, 3:] = torch.ones(3, 3).tril().bool()            # two packed sequences
    with torch.no_grad(), capture_attention(model) as cap:
        model(input_ids=ids, attention_mask=block_diagonal)
    with pytest.raises(CaptureStateError, match="custom attention mask that is not causal \\+ padding"):
        cap.attention(0)


def test_fallback_restores_output_attentions_and_implementation_on_error(model, batch, clean_logits, hooks):
    seen = []
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with torch.no_grad(), capture_attention(model, method="output_attentions"):
            seen.append((model.config.output_attentions, model.config._attn_implementation))
            raise RuntimeError("boom")
    assert seen == [(True, "eager")]
    assert any("output_attentions=True" in str(w.message) for w in warned)
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


def test_fallback_cannot_nest_inside_a_registry_capture(model, batch, clean_logits, hooks):
    inner = capture_attention(model, method="output_attentions")
    with capture_attention(model), pytest.raises(CaptureStateError, match="cannot nest inside it"):
        inner.__enter__()
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)


@pytest.mark.parametrize("inner_method", ["registry", "output_attentions"])
def test_nothing_nests_inside_a_fallback_capture(model, batch, clean_logits, hooks, inner_method):
    inner = capture_attention(model, method=inner_method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with capture_attention(model, method="output_attentions"), \
                pytest.raises(CaptureStateError, match="output_attentions capture is already open"):
            inner.__enter__()
    assert_model_clean(model, batch, clean_logits, hooks_before=hooks)
