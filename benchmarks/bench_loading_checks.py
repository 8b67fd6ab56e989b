"""What ``load_model``'s safety checks cost next to the load itself.

Run:  .venv/bin/python benchmarks/bench_loading_checks.py            (a ~0.5 B-parameter Qwen2, 3 repeats)
      .venv/bin/python benchmarks/bench_loading_checks.py --quick    (a ~30 M-parameter Qwen2, 1 repeat)

Saves a random Qwen2 (float32 on disk) to a temporary folder, then times, interleaved:

- ``load``: ``load_model(folder, device="cpu", dtype=torch.float32)`` (everything, checks included),
- ``headers``: the safetensors header check of every weights file (``_check_weight_files``),
- ``finite``: the NaN/infinity check of every weight (``_check_finite_weights``),
- ``tokenizer``: loading and probing the tokenizer (``_load_tokenizer``).

Medians of wall time; the checks' share of the load. Nothing asserts: it prints. On a
shared CPU the numbers are noisy: run it on a quiet machine before quoting them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from finwidget.demo import MODEL_DIR
    from finwidget.loading import _check_finite_weights, _check_weight_files, _load_tokenizer, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    small = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2}
    large = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 4}
    shape = small if args.quick else large
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="fw-bench-load-") as tmp:
        folder = Path(tmp)
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32768, tie_word_embeddings=False, **shape))
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        loaded, _ = load_model(folder, device="cpu", dtype=torch.float32)
        rows = {
            "load": _median_seconds(lambda: load_model(folder, device="cpu", dtype=torch.float32), repeats),
            "headers": _median_seconds(lambda: _check_weight_files(folder), repeats),
            "finite": _median_seconds(lambda: _check_finite_weights(loaded, "bench"), repeats),
            "tokenizer": _median_seconds(lambda: _load_tokenizer(str(folder), "bench", folder), repeats),
        }
    print(f"random Qwen2, {params / 1e6:.0f} M parameters, float32, {args.threads} threads, median of {repeats}")
    for name, seconds in rows.items():
        share = "" if name == "load" else f"  ({100 * seconds / rows['load']:.1f} % of the load)"
        print(f"{name:>10}: {seconds * 1000:9.1f} ms{share}")


if __name__ == "__main__":
    main()
