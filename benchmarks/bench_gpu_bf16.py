"""The real-size measurements on a GPU in bfloat16 (prepared; see RESULTS.md for whether it has run).

One command, with a time limit (stages that would start after it are skipped and say so;
the numbers so far are written after every stage):

    python benchmarks/bench_gpu_bf16.py --time-limit 480 --json "$OUT/gpu_bf16.json"

Defaults: Qwen2-7B's head geometry (``real_size.GEOMETRIES["7b-heads"]``: 28 layers x 28
query heads over 4 KV heads, head size 32, Qwen2's vocabulary), random weights, bfloat16,
eager attention, on ``cuda``; statements of about 1,000 and 4,096 tokens.
``--geometry 7b`` uses Qwen2-7B's full size (hidden 3,584, head size 128, MLP 18,944;
7.6B parameters, about 15 GB in bfloat16), still random weights built on the device.

Stages, per statement length (each timed with ``torch.cuda.synchronize`` around it), all
printed next to the anchor measured in the same process (one plain forward, answer
logits only):
1. forward, forward with every position's logits, forward under ``capture_attention``
   (capture overhead);
2. ``head_specialization`` on the capture and on a fresh analyzer;
3. a head-ablation click: the estimate (kept gradients), the exact re-run, the gradient
   pass, a newer click stopping an older exact run;
4. the sweep of every head (``--sweep-layers`` to limit it), and a cancelled sweep;
5. the explorer at the longer length: build, first draw, focus switch, saved state.

Nothing asserts; exit status 2 when there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1000, 4096])
    parser.add_argument("--geometry", choices=sorted(real_size.GEOMETRIES), default="7b-heads")
    parser.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-layers", type=int, default=0, help="sweep only this many last layers (0: all)")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds; later stages are skipped")
    parser.add_argument("--tokenizer", choices=["auto", "qwen2", "demo"], default="auto")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (bench_real_size.py is the CPU one)")
        return 2
    started = time.perf_counter()
    deadline = started + args.time_limit

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    results: dict = {"geometry": args.geometry, "dtype": "bfloat16", "attn": args.attn, "device": args.device,
                     "runs": {}, "skipped": [], "failed": {}}

    def save() -> None:
        results["elapsed_s"] = time.perf_counter() - started
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2, default=str))

    def stage(name: str, fn):
        if time.perf_counter() > deadline:
            results["skipped"].append(name)
            print(f"{name}: skipped (time limit {args.time_limit:.0f} s)")
            save()
            return None
        try:
            out = fn()
        except Exception as err:  # noqa: BLE001 - one failed stage must not lose the others
            results["failed"][name] = f"{type(err).__name__}: {err}"
            print(f"{name}: FAILED {type(err).__name__}: {err}")
            traceback.print_exc()
            out = None
        save()
        return out

    # A watchdog: past the limit plus a grace period, write what there is and leave.
    def watchdog():
        time.sleep(args.time_limit + 60)
        results["killed_by_time_limit"] = True
        save()
        print("time limit passed by 60 s: stopping", flush=True)
        import os

        os._exit(124)

    threading.Thread(target=watchdog, daemon=True).start()

    from finwidget.task import EarningsTask

    model = real_size.build_model(args.geometry, dtype=torch.bfloat16, device=args.device,
                                  attn_implementation=args.attn)
    tokenizer, tokenizer_name = real_size.load_tokenizer(args.tokenizer)
    task = EarningsTask(tokenizer)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    results.update(gpu=name, tokenizer=tokenizer_name, parameters=real_size.parameter_count(model),
                   torch=torch.__version__)
    print(f"{name}: {args.geometry}, {results['parameters'] / 1e6:.0f}M parameters, bfloat16, {args.attn}; "
          f"tokenizer: {tokenizer_name}")
    config = model.config

    def one_length(target: int) -> None:
        text = real_size.statement_of_length(tokenizer, target, task)
        batch = {k: v.to(args.device) for k, v in task.encode(text).items()}
        T = int(batch["input_ids"].shape[1])
        run = results["runs"].setdefault(str(T), {})
        print(f"\n--- T = {T}")
        fwd = stage(f"T={T} forward", lambda: real_size.measure_forward(model, batch, sync, args.repeats))
        if fwd is None:
            return
        capture = fwd.pop("capture")
        run.update(fwd)
        anchor = fwd["forward_s"]

        def show(label: str, seconds: float) -> None:
            print(f"{label:<58} {seconds * 1000:10.1f} ms  ({seconds / anchor:6.2f}x one forward)")

        show("one forward (anchor)", anchor)
        show("forward, every position's logits", fwd["forward_all_logits_s"])
        show("forward under capture", fwd["capture_forward_s"])
        spec = stage(f"T={T} head_specialization", lambda: real_size.measure_specialization(
            model, tokenizer, text, task, capture, sync, args.repeats))
        capture = None  # frees the recorded queries/keys
        if spec:
            run.update(spec)
            show(f"head_specialization ({spec['heads']} heads) on the capture", spec["specialization_on_capture_s"])
            show("head_specialization, fresh analyzer", spec["specialization_fresh_analyzer_s"])
        clicks = stage(f"T={T} clicks", lambda: real_size.measure_clicks(
            model, tokenizer, text, task, sync, args.repeats))
        if clicks:
            run.update(clicks)
            show("explorer build", clicks["explorer_build_s"])
            show("click-estimate gradients (once per statement)", clicks["gradient_pass_s"])
            print(f"click: estimate {clicks['estimate_ms']:.2f} ms, exact {clicks['exact_ms']:.1f} ms; "
                  f"|estimate - exact| {clicks['estimate_abs_error']:.3g}; newer click stopped the older run in "
                  f"{clicks['supersede_stop_ms']:.1f} ms (cancelled: {clicks['older_run_cancelled']})")
        layers = None
        if args.sweep_layers:
            layers = list(range(max(0, config.num_hidden_layers - args.sweep_layers), config.num_hidden_layers))
        sweep = stage(f"T={T} sweep", lambda: real_size.measure_sweep(
            model, tokenizer, text, task, sync, layers=layers, cancel_after=28))
        if sweep:
            run.update(sweep)
            show(f"sweep of {sweep['sweep_heads']} heads", sweep["sweep_s"])
            print(f"cancelled sweep: {sweep['cancel_reply']!r}, {sweep['cancel_to_reply_ms']:.0f} ms after the "
                  f"cancel; hooks left {sweep['hooks_left']}")
        if T >= 2048:
            draw = stage(f"T={T} explorer draw", lambda: real_size.measure_explorer_draw(
                model, tokenizer, text, task, sync, args.repeats))
            if draw:
                run["explorer"] = draw
                print(f"explorer: build {draw['build_s']:.2f} s, first draw {draw['first_draw_s'] * 1000:.0f} ms / "
                      f"{draw['first_draw_bytes'] / 1e6:.2f} MB, focus switch {draw['focus_switch_ms']:.1f} ms, "
                      f"saved state {draw['saved_state_bytes'] / 1e6:.3f} MB")
        if args.device.startswith("cuda"):
            run["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    for target in args.tokens:
        one_length(target)
    save()
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
