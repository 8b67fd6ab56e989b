"""Command line: ``finwidget report`` writes a standalone HTML page of the analysis.

The headless form of the quickstart, for servers and CI::

    finwidget report --demo out.html
    finwidget report --model /path/to/Qwen2-7B --statement filing.txt out.html

Every user error (a bad option, an output path that cannot be written, a statement
file that is not UTF-8 text, a model that cannot be loaded, ...) prints one line
``finwidget: error: ...`` and no traceback. The output path, the device and the
statement file are checked before any model is loaded.

Exit codes: 0 the page was written; 2 a user error (argparse's usage errors too);
130 interrupted (Ctrl-C). Anything else is a bug in finwidget: please report it.
"""

from __future__ import annotations

import argparse
import codecs
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from finwidget.errors import FinwidgetError, InputError, OutputError
from finwidget.strict_json import non_finite_paths

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

_HTML_SUFFIXES = (".html", ".htm")
# File signatures of documents people save statements in that are not plain text.
_NOT_TEXT_SIGNATURES = {
    b"%PDF-": "a PDF document",
    b"PK\x03\x04": "a zip archive (a .docx / .xlsx file is one)",
    b"\xd0\xcf\x11\xe0": "an old Office document (.doc / .xls)",
    b"{\\rtf": "an RTF document",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finwidget", description=__doc__.splitlines()[0],
        epilog="exit codes: 0 written, 2 user error (one line on stderr), 130 interrupted",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write a standalone HTML page of the explorer for one statement")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true", help="use the shipped demo model and a demo statement")
    source.add_argument("--model", help="a local model folder or hub id")
    report.add_argument("--statement", type=Path, help="a UTF-8 text file holding the statement (default with "
                        "--demo: a generated demo statement)")
    report.add_argument("--seed", type=int, default=None, help="seed of the generated demo statements "
                        "(--demo without --statement; default 7)")
    report.add_argument("--statements", type=int, default=None, help="how many demo statements the sweep "
                        "covers (--demo without --statement; default 8; the first is shown)")
    report.add_argument("--mode", default="zero", choices=("zero", "mean"), help="how the sweep ablates each "
                        "head (mean: over the demo generator's reference statements for the demo model)")
    report.add_argument("--device", default=None, help="'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu' "
                        "(default: 'auto' with --model, 'cpu' with --demo)")
    report.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                        help="with --model: 'auto' (default: bfloat16 on CUDA, float16 on MPS, float32 on the CPU)")
    report.add_argument("--load-in-4bit", action="store_true", help="with --model: quantize to 4 bits "
                        "(bitsandbytes, CUDA only)")
    report.add_argument("--truncate", action="store_true", help="drop tokens from the start of a statement "
                        "longer than the model's context (else a too-long statement is an error)")
    report.add_argument("output", type=Path, help="the .html file to write")
    return parser


# ---------------------------------------------------------------------- the output path
def check_output_path(path: Path) -> Path:
    """Refuse an output path the page could not be written to, before any model work.

    Checks the suffix, that the folder exists and is a folder, that a file can be
    created in it, that an existing file there is writable, and that the disk has room
    for at least the page's frontend bundle.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"the output {str(path)!r} is a folder; name the .html file to write inside it")
    if path.suffix.lower() not in _HTML_SUFFIXES:
        raise OutputError(f"the output must be an .html file, got {str(path)!r}; e.g. report.html")
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"the folder {str(parent)!r} of the output does not exist; create it first (mkdir -p)")
    if not parent.is_dir():
        raise OutputError(f"{str(parent)!r} is a file, not a folder, so {str(path)!r} cannot be written")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"the output {str(path)!r} exists and is read-only; choose another path or make it writable")
    try:
        handle, probe = tempfile.mkstemp(dir=parent, prefix=".finwidget-probe-", suffix=".html")
    except OSError as err:
        raise OutputError(
            f"cannot write in the folder {str(parent)!r}: {err.strerror or err}; choose a writable folder"
        ) from None
    os.close(handle)
    os.unlink(probe)
    needed = _bundle_bytes()
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise OutputError(
            f"the disk holding {str(parent)!r} has {free} bytes free, the page needs at least {needed}; "
            "free some space or write elsewhere"
        )
    return path


def _bundle_bytes() -> int:
    """The size of the frontend files every page inlines (a lower bound on the page's size)."""
    static = Path(__file__).resolve().parent / "static"
    return sum(p.stat().st_size for p in (static / "widget.js", static / "widget.css") if p.is_file())


# ---------------------------------------------------------------------- the statement file
def read_statement_file(path: Path) -> str:
    """The text of a statement file, read as UTF-8 (a UTF-8 byte-order mark is dropped).

    Raises ``InputError`` naming the file and the fix for a missing file, a folder, a
    binary file, a document format (PDF, Word, ...), UTF-16/32 text, any other
    encoding that is not UTF-8, and an empty file.
    """
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"the statement file {name!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"the statement file {name!r} is a folder; pass a text file") from None
    except OSError as err:
        raise InputError(f"cannot read the statement file {name!r}: {err.strerror or err}") from None
    for signature, what in _NOT_TEXT_SIGNATURES.items():
        if data.startswith(signature):
            raise InputError(f"the statement file {name!r} is {what}, not plain text; save the statement as "
                             "a UTF-8 .txt file")
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputError(f"the statement file {name!r} is UTF-32 text; re-save it as UTF-8 "
                         "(e.g. iconv -f UTF-32 -t UTF-8)")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"the statement file {name!r} is UTF-16 text; re-save it as UTF-8 "
                         "(e.g. iconv -f UTF-16 -t UTF-8)")
    if b"\x00" in data:
        half = data[1::2] if data[:1] != b"\x00" else data[0::2]
        utf16_like = len(data) >= 4 and half.count(0) >= 0.9 * len(half)
        what = "looks like UTF-16 text without a byte-order mark" if utf16_like else "is binary (it holds NUL bytes)"
        raise InputError(f"the statement file {name!r} {what}; pass a UTF-8 text file")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"the statement file {name!r} is not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "re-save it as UTF-8 (e.g. iconv -f latin1 -t UTF-8)"
        ) from None
    if not text.strip():
        raise InputError(f"the statement file {name!r} is empty")
    return text


def _statement_texts(args) -> list[str]:
    if args.statement is not None:
        return [read_statement_file(args.statement)]
    if args.demo:
        from finwidget.demo import make_statements

        count = 8 if args.statements is None else args.statements
        if count < 1:
            raise InputError(f"--statements must be at least 1, got {count}")
        return [s.text for s in make_statements(count, seed=7 if args.seed is None else args.seed)]
    raise InputError("--model needs --statement FILE (a UTF-8 text file holding the statement)")


def _check_options(args) -> None:
    if args.statements is not None and (not args.demo or args.statement is not None):
        raise InputError("--statements sets how many demo statements are generated, so it only applies with "
                         "--demo and without --statement")
    if args.seed is not None and (not args.demo or args.statement is not None):
        raise InputError("--seed chooses the generated demo statement, so it only applies with --demo "
                         "and without --statement")
    if args.demo and (args.dtype is not None or args.load_in_4bit):
        raise InputError("the demo model always runs in float32, so --dtype and --load-in-4bit only apply "
                         "with --model")


# ---------------------------------------------------------------------- the report
def _check_finite_prediction(prediction: dict) -> None:
    bad = non_finite_paths(prediction, "prediction")
    if bad:
        raise OutputError(
            f"the model's answer is not a finite number ({', '.join(bad[:3])}); its weights or dtype "
            "give NaN/infinite logits, so no page is written"
        )


def _write_page(write, path: Path) -> None:
    """Write the page next to ``path`` and move it into place: never a half-written page."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".html")
    os.close(handle)
    try:
        # mkstemp makes the file private (0600); give the page the mode a plain write would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        write(temp)
        os.replace(temp, path)
    except FinwidgetError:
        raise
    except OSError as err:
        raise OutputError(f"could not write {str(path)!r}: {err.strerror or err}") from None
    except ValueError as err:
        if "JSON" not in str(err):
            raise
        raise OutputError(
            f"the page for {str(path)!r} would hold a non-finite number (NaN or infinity), which JSON "
            "cannot carry; the model's outputs are not finite"
        ) from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def report(args) -> Path:
    """The analysis page: prediction, sweep, top heads and what they read, and the explorer."""
    _check_options(args)
    output = check_output_path(args.output)
    texts = _statement_texts(args)
    # Only now import torch: the checks above answer at once.
    from finwidget.demo import load_demo_model
    from finwidget.loading import load_model, resolve_device

    device = args.device if args.device is not None else ("cpu" if args.demo else "auto")
    resolve_device(device)
    from finwidget.widgets import AttentionExplorer
    from finwidget.widgets.report import write_explorer_report

    if args.demo:
        model, tokenizer = load_demo_model(device=device)
    else:
        model, tokenizer = load_model(args.model, device=device, dtype=args.dtype or "auto",
                                      load_in_4bit=args.load_in_4bit)
    explorer = AttentionExplorer(model, tokenizer, texts, truncate=args.truncate)
    # The answer must be finite before any sweep work (a NaN model gets one clear line).
    _check_finite_prediction(explorer.prediction)
    _write_page(lambda temp: write_explorer_report(explorer, temp, mode=args.mode), output)
    return output


# The Python API's spelling of an option in an error's advice -> this command's option.
_ADVICE_SPELLINGS = (
    (re.compile(r"\btruncate=True\b"), "--truncate"),
    (re.compile(r"\bload_in_4bit=True\b"), "--load-in-4bit"),
    (re.compile(r"\bdevice='([^']*)'"), r"--device \1"),
    (re.compile(r"\bdtype='([^']*)'"), r"--dtype \1"),
)


def _one_line(err: FinwidgetError) -> str:
    """The error as one line, with advice that names this command's options."""
    message = " ".join(str(err).split())
    for api_spelling, option in _ADVICE_SPELLINGS:
        message = api_spelling.sub(option, message)
    return message


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = report(args)
    except FinwidgetError as err:
        print(f"finwidget: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("finwidget: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"wrote {path}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
