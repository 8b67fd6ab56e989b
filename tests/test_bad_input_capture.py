"""Bad-input catalogue: capturing attention (``capture_attention`` and the capture's readers).
Each case names the finwidget error it must raise and checks the demo model is untouched:
its attention implementation restored, no hook left, weights bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bad_input_common import accepted, refused

from finwidget.capture import capture_attention
from finwidget.demo import make_statements
from finwidget.errors import CaptureStateError, InputError, LocationError, LocationTypeError


@pytest.fixture(scope="module")
def batch(demo):
    return demo[2].encode(make_statements(1, seed=3)[0].text)


@pytest.fixture(scope="module")
def capture(demo, batch):
    model = demo[0]
    with capture_attention(model) as cap, torch.inference_mode():
        model(**batch)
    return cap


OPTION_CASES = [
    ("float layer", {"layers": [0.5]}, LocationTypeError),
    ("string layers", {"layers": "0"}, InputError),
    ("bool layer", {"layers": [True]}, LocationTypeError),
    ("None in layers", {"layers": [None]}, LocationTypeError),
    ("layer out of range", {"layers": [5]}, LocationError),
    ("layer far below", {"layers": [-3]}, LocationError),
    ("dict of layers", {"layers": {0: 1}}, InputError),
    ("set of layers", {"layers": {0, 1}}, InputError),
    ("empty layers", {"layers": []}, InputError),
    ("layers a number object", {"layers": object()}, InputError),
    ("store_on gpu", {"store_on": "gpu"}, InputError),
    ("store_on a number", {"store_on": 3.5}, InputError),
    ("store_dtype int8", {"store_dtype": torch.int8}, InputError),
    ("store_dtype a string", {"store_dtype": "half"}, InputError),
    ("unknown method", {"method": "magic"}, InputError),
    ("method a list", {"method": ["auto"]}, InputError),
]


@pytest.mark.parametrize("name,options,error", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_capture_options_are_refused_before_touching_the_model(demo, batch, name, options, error):
    model = demo[0]

    def call():
        with capture_attention(model, **options):
            model(**batch)

    refused(model, error, call)


@pytest.mark.parametrize("layers", [[np.int64(1)], torch.tensor(1), np.int32(0), [torch.tensor(0), 1]])
def test_integer_scalars_of_numpy_and_torch_select_layers(demo, batch, layers):
    model = demo[0]

    def call():
        with capture_attention(model, layers=layers) as cap, torch.inference_mode():
            model(**batch)
        return cap

    cap = accepted(model, call)
    assert cap.layers == sorted({int(v) for v in (layers if isinstance(layers, list) else [layers])})


READER_CASES = [
    ("layer a float", lambda c: c.attention(0.0), LocationTypeError),
    ("layer a bool", lambda c: c.attention(False, 0), LocationTypeError),
    ("layer out of range", lambda c: c.attention(2), LocationError),
    ("head a float", lambda c: c.attention(0, 1.0), LocationTypeError),
    ("head a string", lambda c: c.attention(0, "1"), LocationTypeError),
    ("head a float tensor", lambda c: c.attention(0, torch.tensor([0.5])), LocationTypeError),
    ("head a bool tensor", lambda c: c.attention(0, torch.tensor([True, False, True, False])), LocationTypeError),
    ("head out of range", lambda c: c.attention(0, 4), LocationError),
    ("head list with one bad", lambda c: c.attention(0, [0, 9]), LocationError),
    ("batch a float", lambda c: c.attention(0, 1, batch=0.7), LocationTypeError),
    ("batch out of range", lambda c: c.attention(0, 1, batch=5), LocationError),
    ("query a float", lambda c: c.attention(0, 1, query=2.5), LocationTypeError),
    ("query out of range", lambda c: c.attention(0, 1, query=10**6), LocationError),
    ("query huge int", lambda c: c.attention(0, 1, query=10**40), LocationError),
    ("kv head given a query head", lambda c: c.attention(0, kv_head=3), LocationError),
    ("kv head a float", lambda c: c.keys(0, 0.0), LocationTypeError),
    ("queries layer a float", lambda c: c.queries(1.0), LocationTypeError),
    ("head_matrix head too negative", lambda c: c.head_matrix(0, -9), LocationError),
    ("head_matrix head a float", lambda c: c.head_matrix(0, 0.0), LocationTypeError),
    ("kv_head_of a float", lambda c: c.kv_head_of(1.5), LocationTypeError),
    ("query_heads_of out of range", lambda c: c.query_heads_of(5), LocationError),
]


@pytest.mark.parametrize("name,call,error", READER_CASES, ids=[c[0] for c in READER_CASES])
def test_bad_indexes_into_a_capture_are_refused(demo, capture, name, call, error):
    refused(demo[0], error, lambda: call(capture))


def test_numpy_and_torch_integers_read_the_same_attention(demo, capture):
    expected = capture.attention(1, 2)
    assert torch.equal(capture.attention(np.int64(1), np.int32(2)), expected)
    assert torch.equal(capture.attention(torch.tensor(1), torch.tensor(2)), expected)
    assert torch.equal(capture.head_matrix(np.int64(1), np.int64(2)), capture.head_matrix(1, 2))


def test_a_capture_entered_twice_is_refused(demo, batch):
    model = demo[0]
    cap = capture_attention(model)

    def twice():
        with cap, cap:
            pass

    refused(model, CaptureStateError, twice)
