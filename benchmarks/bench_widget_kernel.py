"""The explorer's kernel side, side by side with BertViz's head view on the same attention.

Run:  .venv/bin/python benchmarks/bench_widget_kernel.py               (T ~ 128, 256, 1024, 2048)
      .venv/bin/python benchmarks/bench_widget_kernel.py --quick       (T ~ 128, 1024; fewer repeats)
      .venv/bin/python benchmarks/bench_widget_kernel.py --lengths 4096 --bertviz-max 0

Model: a random Qwen2-shaped model with the geometry of ../shared/notes/anchors.md
(12 layers, hidden 768, 12 query heads over 2 KV heads, MLP 3072), float32, CPU, on demo
statements (finwidget.demo) stacked up to about T tokens, read with the demo tokenizer.

What it measures (wall time in the kernel, bytes that go to the browser; the browser's own
timings are in bench_widget.py):

finwidget, ``AttentionExplorer(model, tokenizer, text)``:
- build: the cell's work (one forward pass with Q/K recorded and the residual stream
  cached, statement read);
- saved state: ``ipywidgets.embed.embed_data`` of the widget and its dependencies (what a
  saved notebook keeps for it);
- first draw: answering every request the frontend makes for its first draw (the focused
  head's matrix, statement colours, grid, layer flow), time and bytes (JSON + buffers);
- focus switch: the head_matrix request for another head (median over heads);
- ablation: set_ablations for one head of the middle layer (exact fast path).

BertViz ``head_view(attention, tokens, html_action="return")``, the anchor: an eager forward
with ``output_attentions=True`` (the weights it needs) plus building its HTML, time and
HTML bytes (everything the notebook receives, and saves). Run up to ``--bertviz-max``
tokens (default 256; anchors.md: 1 GB of HTML at T = 512, MemoryError at 1024).

Torch runs with 1 thread (``--threads``): this machine's 2 cores are shared with other
jobs, and with 2 threads a busy core makes small ops 10-50x slower. Nothing here
asserts: it prints.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

GEOMETRY = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "intermediate_size": 3072,
}


def statement_of_length(tokenizer, target: int) -> str:
    """Demo statement lines stacked until the prompt has at least ``target`` tokens."""
    from finwidget.demo import make_statements
    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)
    lines = [line for s in make_statements(max(4, target // 40), seed=5) for line in s.text.split("\n")[:-1]]
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(task.encode("\n".join(lines[:mid]))["input_ids"][0]) < target:
            lo = mid + 1
        else:
            hi = mid
    return "\n".join(lines[:lo])


def message_bytes(reply: dict, buffers: list) -> int:
    return len(json.dumps(reply).encode("utf-8")) + sum(len(b) for b in buffers)


CPU_SECONDS: list[float] = []


def timed(fn):
    """``(result, wall seconds)``; the process CPU seconds go to ``CPU_SECONDS``."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU_SECONDS.append(time.process_time() - cpu)
    return out, time.perf_counter() - start


def bench_finwidget(model, tokenizer, text, repeats: int) -> dict:
    from ipywidgets.embed import dependency_state, embed_data

    from finwidget.widgets import AttentionExplorer
    from finwidget.widgets.protocol import SYNCED_STATE, requests_for_state

    widget, build = timed(lambda: AttentionExplorer(model, tokenizer, text))
    build_cpu = CPU_SECONDS[-1]
    # This widget and what it depends on only (not every widget alive in the process).
    state = embed_data(views=[widget], state=dependency_state([widget]))["manager_state"]
    saved = len(json.dumps(state).encode("utf-8"))
    state = {name: getattr(widget, name) for name in SYNCED_STATE}
    first_bytes, first_time = 0, 0.0
    for request in requests_for_state(state):
        (reply, buffers), seconds = timed(lambda r=request: widget.handle_request({**r, "id": 1}))
        assert reply["ok"], reply
        first_bytes += message_bytes(reply, buffers)
        first_time += seconds
    geometry = widget.geometry
    heads = [(layer, (3 * layer + 1) % geometry["num_heads"]) for layer in range(1, geometry["num_layers"])]
    switch_times, switch_cpu, switch_bytes = [], [], 0
    for layer, head in heads[: max(3, repeats)]:
        (reply, buffers), seconds = timed(
            lambda lh=(layer, head): widget.handle_request(
                {"kind": "head_matrix", "id": 2, "layer": lh[0], "head": lh[1]}
            )
        )
        switch_times.append(seconds)
        switch_cpu.append(CPU_SECONDS[-1])
        switch_bytes = message_bytes(reply, buffers)
    middle = geometry["num_layers"] // 2
    ablation_times, ablation_cpu = [], []
    for head in range(max(1, repeats)):
        _, seconds = timed(
            lambda h=head: widget.handle_request(
                {
                    "kind": "set_ablations",
                    "id": 3,
                    "ablations": [{"layer": middle, "head": h, "mode": "zero"}],
                }
            )
        )
        ablation_times.append(seconds)
        ablation_cpu.append(CPU_SECONDS[-1])
    seq_len = widget.session.seq_len
    widget.close()
    return {
        "T": seq_len,
        "build_s": build,
        "build_cpu_s": build_cpu,
        "focus_cpu_ms": 1000 * statistics.median(switch_cpu),
        "saved_bytes": saved,
        "first_draw_s": first_time,
        "first_draw_bytes": first_bytes,
        "focus_ms": 1000 * statistics.median(switch_times),
        "focus_bytes": switch_bytes,
        "ablation_ms": 1000 * statistics.median(ablation_times),
        "ablation_cpu_ms": 1000 * statistics.median(ablation_cpu),
    }


def bench_bertviz(model, tokenizer, text) -> dict:
    import torch
    from bertviz import head_view

    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)
    batch = task.encode(text)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())

    def run():
        with torch.inference_mode():
            out = model(**batch, output_attentions=True)
        html = head_view(out.attentions, tokens, html_action="return")
        return len(html.data.encode("utf-8"))

    size, seconds = timed(run)
    return {"html_bytes": size, "python_s": seconds}


def demo_row(repeats: int) -> None:
    """The same measurements on the shipped demo model and one demo statement (issue 5's
    ablation target: < 300 ms on the demo model)."""
    from finwidget import load_demo_model
    from finwidget.demo import make_statements

    try:
        model, tokenizer = load_demo_model()
    except Exception as err:  # noqa: BLE001 - the demo model may not be built in this checkout
        print(f"demo model: not measured ({type(err).__name__}: {err})")
        return
    fw = bench_finwidget(model, tokenizer, make_statements(1, seed=7)[0].text, repeats)
    print(
        f"demo model (T={fw['T']}): build {fw['build_s']:.2f} s (cpu {fw['build_cpu_s']:.2f}), first draw "
        f"{fw['first_draw_s'] * 1000:.0f} ms, {fw['first_draw_bytes'] / 1e3:.0f} kB, focus switch "
        f"{fw['focus_ms']:.1f} ms (cpu {fw['focus_cpu_ms']:.1f}), ablation {fw['ablation_ms']:.1f} ms "
        f"(cpu {fw['ablation_cpu_ms']:.1f}), saved state {fw['saved_bytes'] / 1e3:.0f} kB"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bertviz-max", type=int, default=256, help="largest T BertViz is run at (0: never)")
    args = parser.parse_args(argv)
    lengths = args.lengths or ([128, 1024] if args.quick else [128, 256, 1024, 2048])
    repeats = 3 if args.quick else args.repeats

    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from finwidget.demo import MODEL_DIR

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=max(lengths) + 512, **GEOMETRY)
    model = Qwen2ForCausalLM(config).eval()
    eager = None
    try:
        import bertviz  # noqa: F401

        have_bertviz = True
    except ImportError:
        have_bertviz = False
    print(
        f"model: random Qwen2, {GEOMETRY}; torch threads {args.threads}; bertviz "
        f"{'installed' if have_bertviz else 'not installed (anchor not run)'}"
    )
    header = (
        f"{'T':>5} | {'build s (cpu)':>13} {'saved MB':>8} {'1st draw s':>10} {'1st MB':>7} "
        f"{'focus ms (cpu)':>14} {'focus MB':>8} {'ablate ms (cpu)':>15} | "
        f"{'BertViz s':>9} {'HTML MB':>8} | {'bytes ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    for target in lengths:
        text = statement_of_length(tokenizer, target)
        fw = bench_finwidget(model, tokenizer, text, repeats)
        bv_cols, ratio = f"{'not run':>9} {'':>8}", f"{'':>11}"
        if have_bertviz and target <= args.bertviz_max:
            if eager is None:
                eager = Qwen2ForCausalLM(
                    Qwen2Config(
                        vocab_size=len(tokenizer),
                        attn_implementation="eager",
                        max_position_embeddings=max(lengths) + 512,
                        **GEOMETRY,
                    )
                ).eval()
                eager.load_state_dict(model.state_dict())
            bv = bench_bertviz(eager, tokenizer, text)
            bv_cols = f"{bv['python_s']:>9.2f} {bv['html_bytes'] / 1e6:>8.1f}"
            ratio = f"{bv['html_bytes'] / (fw['saved_bytes'] + fw['first_draw_bytes']):>10.0f}x"
        print(
            f"{fw['T']:>5} | {fw['build_s']:>6.2f} ({fw['build_cpu_s']:>4.1f}) "
            f"{fw['saved_bytes'] / 1e6:>8.3f} "
            f"{fw['first_draw_s']:>10.2f} {fw['first_draw_bytes'] / 1e6:>7.3f} "
            f"{fw['focus_ms']:>6.1f} ({fw['focus_cpu_ms']:>5.1f}) {fw['focus_bytes'] / 1e6:>8.3f} "
            f"{fw['ablation_ms']:>7.1f} ({fw['ablation_cpu_ms']:>5.0f}) | {bv_cols} | {ratio}",
            flush=True,
        )
    demo_row(repeats)
    print(
        "\nbytes ratio = BertViz HTML / (finwidget saved state + first-draw messages): "
        "what reaches the browser."
    )
    print(
        "finwidget sends one head's matrix per focus switch (lower triangle, 1 byte a cell); BertViz embeds"
    )
    print("every layer x head x T x T weight as JSON text, twice, up front. Wall times on a shared machine;")
    print("(cpu) is this process's CPU time for the same call, which other jobs' load disturbs less.")


if __name__ == "__main__":
    main()
