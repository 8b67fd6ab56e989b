"""Command line: ``finwidget report`` writes a standalone HTML page of the analysis.

The headless form of the quickstart, for servers and CI::

    finwidget report --demo out.html
    finwidget report --model /path/to/Qwen2-7B --statement filing.txt out.html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finwidget.errors import FinwidgetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finwidget", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write a standalone HTML page of the explorer for one statement")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true", help="use the shipped demo model and a demo statement")
    source.add_argument("--model", help="a local model folder or hub id")
    report.add_argument("--statement", type=Path, help="a text file holding the statement (default with --demo: "
                        "a generated demo statement)")
    report.add_argument("--seed", type=int, default=7, help="seed of the demo statement (with --demo)")
    report.add_argument("--device", default="auto")
    report.add_argument("output", type=Path, help="the HTML file to write")
    return parser


def _statement_text(args) -> str:
    if args.statement is not None:
        try:
            return args.statement.read_text(encoding="utf-8")
        except OSError as err:
            raise FinwidgetError(f"cannot read the statement file {str(args.statement)!r}: {err.strerror}") from None
    if args.demo:
        from finwidget.demo import make_statements

        return make_statements(1, seed=args.seed)[0].text
    raise FinwidgetError("--model needs --statement FILE")


def report(args) -> Path:
    from finwidget.loading import load_demo_model, load_model
    from finwidget.widgets import AttentionExplorer

    text = _statement_text(args)
    model, tokenizer = load_demo_model() if args.demo else load_model(args.model, device=args.device)
    explorer = AttentionExplorer(model, tokenizer, text)
    explorer.save_html(args.output)
    return args.output


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = report(args)
    except FinwidgetError as err:
        print(f"finwidget: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
