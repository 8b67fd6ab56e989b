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
    report.add_argument("--seed", type=int, default=7, help="seed of the demo statements (with --demo)")
    report.add_argument("--statements", type=int, default=8, help="how many demo statements the sweep "
                        "covers (with --demo and no --statement; the first is shown)")
    report.add_argument("--mode", default="zero", choices=("zero", "mean"), help="how the sweep ablates each "
                        "head (mean: over the demo generator's statements for the demo model)")
    report.add_argument("--device", default="auto")
    report.add_argument("output", type=Path, help="the HTML file to write")
    return parser


def _statement_texts(args) -> list[str]:
    if args.statement is not None:
        try:
            return [args.statement.read_text(encoding="utf-8")]
        except OSError as err:
            raise FinwidgetError(f"cannot read the statement file {str(args.statement)!r}: {err.strerror}") from None
    if args.demo:
        from finwidget.demo import make_statements

        if args.statements < 1:
            raise FinwidgetError(f"--statements must be at least 1, got {args.statements}")
        return [s.text for s in make_statements(args.statements, seed=args.seed)]
    raise FinwidgetError("--model needs --statement FILE")


def report(args) -> Path:
    """The analysis page: prediction, sweep, top heads and what they read, and the explorer."""
    from finwidget.loading import load_demo_model, load_model
    from finwidget.widgets.report import write_report

    texts = _statement_texts(args)
    model, tokenizer = load_demo_model() if args.demo else load_model(args.model, device=args.device)
    return write_report(model, tokenizer, texts, args.output, mode=args.mode)


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
