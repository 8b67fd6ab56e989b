"""Real-size interactivity on a CPU: Qwen2-7B's head geometry at about 1,000 tokens.

Run (a quiet machine; about 10-20 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_real_size.py
    .venv/bin/python benchmarks/bench_real_size.py --quick      # a small check that it runs (~2 min)

Model: ``real_size.build_model()``: a random Qwen2 with 28 layers x 28 query heads over 4
KV heads, head size 32 (hidden 896), Qwen2's vocabulary (151,646), MLP 1,024, float32, eager
attention; Qwen2's real tokenizer when the test environment has it (else the demo one).

Every time is printed next to the anchor measured in the same process, side by side: one
plain forward pass of the same model on the same statement (``model(**batch,
logits_to_keep=1)``, as the explorer and the analyzer run it; the forward with every
position's logits is printed too). Targets (issue 10, section 5):

- a head-ablation click shows an answer within 300 ms: the estimate (``estimate_ablations``,
  kept gradients: a dot product), then the exact value (``set_ablations``: re-run from the
  head's layer); a newer click stops an older exact run between layers;
- ``head_specialization`` over every head in at most 1.5x one forward (on a fresh analyzer:
  its capture forward included; and on a capture already made);
- explorer first draw and focus switch at 4,096 tokens, and its saved widget state (< 2 MB).

Torch runs with ``--threads`` threads (default 2, this machine's cores). Nothing asserts:
it prints, and ``--json PATH`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_size


def _no_sync() -> None:
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000, help="statement length for the click and metrics runs")
    parser.add_argument("--long", type=int, default=4096, help="statement length for the explorer draw run (0: skip)")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than 28 (a quick check only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sweep-layers", type=int, default=2, help="sweep the heads of this many last layers")
    parser.add_argument("--tokenizer", choices=["auto", "qwen2", "demo"], default="auto")
    parser.add_argument("--quick", action="store_true", help="4 layers, 300 / 600 tokens, 1 repeat")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.tokens, args.long, args.repeats = 4, 300, 600, 1

    import torch

    from finwidget.task import EarningsTask

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = real_size.build_model(layers=args.layers)
    tokenizer, tokenizer_name = real_size.load_tokenizer(args.tokenizer)
    task = EarningsTask(tokenizer)
    text = real_size.statement_of_length(tokenizer, args.tokens, task)
    batch = task.encode(text)
    T = int(batch["input_ids"].shape[1])
    config = model.config
    print(f"model: {config.num_hidden_layers} layers x {config.num_attention_heads} heads over "
          f"{config.num_key_value_heads} KV heads, hidden {config.hidden_size}, vocabulary {config.vocab_size}, "
          f"{real_size.parameter_count(model) / 1e6:.0f}M parameters, float32, eager; tokenizer: {tokenizer_name}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}; statement T = {T}")

    results: dict = {"T": T, "threads": args.threads, "layers": config.num_hidden_layers,
                     "tokenizer": tokenizer_name, "load_average_start": os.getloadavg()[0]}
    fwd = real_size.measure_forward(model, batch, _no_sync, args.repeats)
    capture = fwd.pop("capture")
    results.update(fwd)
    anchor = fwd["forward_s"]

    def ratio(seconds: float) -> str:
        return f"{seconds:8.3f} s  ({seconds / anchor:5.2f}x one forward)"

    print(f"\none forward (anchor)            {ratio(anchor)}")
    print(f"forward, every position's logits {ratio(fwd['forward_all_logits_s'])}")
    print(f"forward under capture            {ratio(fwd['capture_forward_s'])}")

    spec = real_size.measure_specialization(model, tokenizer, text, task, capture, _no_sync, args.repeats)
    results.update(spec)
    print(f"head_specialization, {spec['heads']} heads, on the capture  {ratio(spec['specialization_on_capture_s'])}")
    print(f"head_specialization on a fresh analyzer (capture forward included) "
          f"{ratio(spec['specialization_fresh_analyzer_s'])}   target <= 1.5x")
    del capture

    clicks = real_size.measure_clicks(model, tokenizer, text, task, _no_sync, args.repeats)
    results.update(clicks)
    print(f"\nexplorer build                   {ratio(clicks['explorer_build_s'])}")
    print(f"click-estimate gradients (once per statement) {ratio(clicks['gradient_pass_s'])}")
    print(f"click on a layer-{clicks['click_layer']} head: estimate {clicks['estimate_ms']:.2f} ms (target 300 ms), "
          f"exact {clicks['exact_ms']:.0f} ms ({clicks['exact_ms'] / 1000 / anchor:.2f}x one forward); "
          f"|estimate - exact| median {clicks['estimate_abs_error']:.3g} logits")
    print(f"a newer click stopped the older exact run in {clicks['supersede_stop_ms']:.0f} ms "
          f"(cancelled: {clicks['older_run_cancelled']}); its own exact reply after {clicks['supersede_newest_ms']:.0f} ms")

    last = config.num_hidden_layers
    sweep_layers = list(range(max(0, last - args.sweep_layers), last))
    sweep = real_size.measure_sweep(model, tokenizer, text, task, _no_sync, layers=sweep_layers, cancel_after=3)
    results.update(sweep)
    per_head = sweep["sweep_s"] / sweep["sweep_heads"]
    print(f"sweep of the last {len(sweep_layers)} layers ({sweep['sweep_heads']} heads): {sweep['sweep_s']:.1f} s, "
          f"{1000 * per_head:.0f} ms a head (later layers re-run fewer layers than a full sweep's average)")
    print(f"sweep cancelled after 3 heads: reply {sweep['cancel_reply']!r} "
          f"{sweep['cancel_to_reply_ms']:.0f} ms after the cancel; hooks left {sweep['hooks_left']}")

    if args.long:
        long_text = real_size.statement_of_length(tokenizer, args.long, task)
        draw = real_size.measure_explorer_draw(model, tokenizer, long_text, task, _no_sync, args.repeats)
        results["long"] = draw
        print(f"\nexplorer at T = {draw['T']}: build {draw['build_s']:.1f} s, first draw (kernel) "
              f"{draw['first_draw_s']:.2f} s / {draw['first_draw_bytes'] / 1e6:.2f} MB, focus switch "
              f"{draw['focus_switch_ms']:.0f} ms / {draw['focus_switch_bytes'] / 1e6:.2f} MB, saved widget state "
              f"{draw['saved_state_bytes'] / 1e6:.3f} MB (target < 2 MB)")
    results["load_average_end"] = os.getloadavg()[0]
    results["total_s"] = time.perf_counter() - started
    print(f"\ntotal {results['total_s']:.0f} s; load average at the end {results['load_average_end']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
