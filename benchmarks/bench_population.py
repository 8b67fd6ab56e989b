"""Per-statement head metrics over a dataset, side by side: the guide's loop vs finwidget's
batched ``Experiment``.

Run:  .venv/bin/python benchmarks/bench_population.py                      (the sizes below)
      .venv/bin/python benchmarks/bench_population.py --demo-n 8 --qwen-n 2 --qwen-tokens 128   (smoke)

Two datasets:
- ``demo``: the shipped demo model (2 layers, 4 heads), ``--demo-n`` statements (default 500,
  ~350 tokens each);
- ``qwen2``: a random Qwen2-shaped model (12 layers, hidden 768, 12 query over 2 KV heads,
  MLP 3072, float32), ``--qwen-n`` statements (default 100) of about ``--qwen-tokens``
  tokens (default 1000; demo statements joined until that long).

Two ways, each in a fresh subprocess (so peak memory is its own):
- guide: the guide's "Sample Analysis Pipeline": per statement one ``model.generate`` with
  ``output_attentions=True`` on the eager path (``max_new_tokens=1``: only the answer token,
  which favours the guide), then the guide's Step 3 loop over every layer and head
  (``attn[0, h].numpy()``, diagonal, first-10-columns mean, entropy) and Step 4's answer
  row; results appended to a list in memory. Step 3 is the guide's code as written; Step 4 is
  cut to the answer row's maximum (the guide's financial-attention mean and top tokens need
  each token classified, which this loop skips): a lower bound on the guide's cost.
- finwidget: ``Experiment.run`` (length-sorted, left-padded batches of ``--batch-size``
  under ``capture_attention`` on SDPA; every metric of ``finwidget.population.metrics``,
  18 per head against the guide's 3; one Parquet part per batch), then ``results()``.

Imports (finwidget.population loads scipy) happen before the clock in both ways.

Printed: wall time, statements per second, the throughput ratio finwidget / guide, and
the peak RSS above the RSS before the loop (model loaded). ``--memory-fractions`` reruns
finwidget on fractions of the dataset to show whether its peak grows with the number of
statements. Nothing here asserts: it prints, as JSON lines and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

GEOMETRY = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 2,
            "intermediate_size": 3072}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _long_statements(n: int, tokens: int, tokenizer) -> list[str]:
    """``n`` demo-format statements, each several demo statements' lines joined to ~``tokens`` tokens."""
    from finwidget.demo import make_statements
    from finwidget.task import DEFAULT_QUESTION, EarningsTask

    task = EarningsTask(tokenizer)
    texts, seed = [], 0
    for _ in range(n):
        body = []
        while True:
            body += [line for line in make_statements(1, seed)[0].text.splitlines() if line != DEFAULT_QUESTION]
            seed += 1
            text = "\n".join(body + [DEFAULT_QUESTION])
            if len(tokenizer(task.prompt(text))["input_ids"]) >= tokens:
                texts.append(text)
                break
    return texts


def _setup(dataset: str, n: int, tokens: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    from finwidget import load_demo_model

    if dataset == "demo":
        from finwidget.demo import make_statements

        model, tokenizer = load_demo_model()
        return model, tokenizer, [s.text for s in make_statements(n, seed=2468)]
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from finwidget.demo import MODEL_DIR

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    config = Qwen2Config(max_position_embeddings=8192, vocab_size=max(1024, len(tokenizer)), **GEOMETRY)
    config._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(config).eval(), tokenizer, _long_statements(n, tokens, tokenizer)


def run_guide(model, tokenizer, texts) -> int:
    """The guide's loop: one generate with output_attentions per sample, metrics from eager tensors."""
    import numpy as np
    import torch

    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)
    results = []
    model.set_attn_implementation("eager")
    try:
        for text in texts:
            batch = task.encode(text)
            with torch.inference_mode():
                output = model.generate(**batch, max_new_tokens=1, do_sample=False, output_attentions=True,
                                        return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id or 0)
            attentions = output.attentions[0]  # the prompt's forward: one [1, H, T, T] per layer
            metrics = []
            for layer, attn in enumerate(attentions):
                for head_idx in range(attn.shape[1]):
                    attention_matrix = attn[0, head_idx].float().numpy()
                    diagonal_attention = np.diag(attention_matrix).mean()
                    beginning_attention = attention_matrix[:, :10].mean()
                    entropy = -(attention_matrix * np.log(attention_matrix + 1e-10)).sum(axis=1).mean()
                    answer_row = attention_matrix[-1]
                    metrics.append((layer, head_idx, diagonal_attention, beginning_attention, entropy,
                                    float(answer_row.max())))
            results.append(metrics)
    finally:
        model.set_attn_implementation("sdpa")
    return sum(len(m) for m in results)


def run_finwidget(model, tokenizer, texts, batch_size: int) -> int:
    from finwidget.population import Experiment

    with tempfile.TemporaryDirectory() as out:
        experiment = Experiment("benchmark", list(texts), batch_size=batch_size, label_column=None)
        table = experiment.run(model, tokenizer, out, progress=False).results()
    return len(table)


def worker(way: str, dataset: str, n: int, tokens: int, threads: int, batch_size: int) -> dict:
    import gc

    model, tokenizer, texts = _setup(dataset, n, tokens, threads)
    # Imports happen before the clock for both ways (the guide's, numpy and torch, are already
    # loaded): finwidget.population pulls in scipy and pandas, a one-off ~1 s that is not throughput.
    import finwidget.population  # noqa: F401

    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    gc.collect()
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    rows = run_guide(model, tokenizer, texts) if way == "guide" else run_finwidget(model, tokenizer, texts, batch_size)
    seconds = time.perf_counter() - start
    return {"way": way, "dataset": dataset, "statements": n, "mean_tokens": sum(lengths) / len(lengths),
            "rows": rows, "seconds": seconds, "statements_per_s": n / seconds,
            "peak_rss_above_start_mb": (_status_bytes("VmHWM") - before) / 2**20}


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-n", type=int, default=500)
    parser.add_argument("--qwen-n", type=int, default=100)
    parser.add_argument("--qwen-tokens", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", nargs="*", default=["demo", "qwen2"])
    parser.add_argument("--memory-fractions", nargs="*", type=float, default=[0.5])
    parser.add_argument("--worker", nargs=6, metavar=("WAY", "DATASET", "N", "TOKENS", "THREADS", "BATCH"))
    args = parser.parse_args()
    if args.worker:
        way, dataset, n, tokens, threads, batch = args.worker
        print(json.dumps(worker(way, dataset, int(n), int(tokens), int(threads), int(batch))))
        return
    print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads}))
    rows = []
    for dataset in args.datasets:
        n = args.demo_n if dataset == "demo" else args.qwen_n
        result = {}
        for way in ("guide", "finwidget"):
            result[way] = _subprocess([way, dataset, str(n), str(args.qwen_tokens), str(args.threads),
                                       str(args.batch_size)])
            print(json.dumps(result[way]))
        ratio = result["finwidget"]["statements_per_s"] / result["guide"]["statements_per_s"]
        peaks = {n: result["finwidget"]["peak_rss_above_start_mb"]}
        for fraction in args.memory_fractions:
            m = max(1, int(n * fraction))
            peaks[m] = _subprocess(["finwidget", dataset, str(m), str(args.qwen_tokens), str(args.threads),
                                    str(args.batch_size)])["peak_rss_above_start_mb"]
        rows.append((dataset, n, result, ratio, peaks))
    print()
    print("| dataset | statements | mean tokens | guide st/s | finwidget st/s | ratio | peak MB guide | "
          "peak MB finwidget (by statements) |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, n, result, ratio, peaks in rows:
        g, f = result["guide"], result["finwidget"]
        by_n = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(peaks.items()))
        print(f"| {dataset} | {n} | {f['mean_tokens']:.0f} | {g['statements_per_s']:.2f} | "
              f"{f['statements_per_s']:.2f} | {ratio:.2f}x | {g['peak_rss_above_start_mb']:.0f} | {by_n} |")


if __name__ == "__main__":
    main()
