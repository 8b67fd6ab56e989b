"""The demo model's tokenizer: a small byte-level BPE shaped like Qwen2's.

It is built offline with the ``tokenizers`` library from demo statements, using
exactly the pipeline ``transformers.Qwen2Tokenizer`` rebuilds from ``vocab.json`` and
``merges.txt`` (NFC normalizer, Qwen2's pre-tokenizer regex, byte-level pre-tokenizer
and decoder). So ``AutoTokenizer.from_pretrained(folder)`` returns a
``Qwen2Tokenizer`` that gives the same ids as the ``tokenizers`` object, and, as in
Qwen2:

- every digit is its own token (the regex has a bare ``\\p{N}`` branch),
- the space before a number is its own token,
- any text can be encoded (the 256 byte symbols are all in the vocabulary),
- ``" increase"`` and ``" decrease"`` are single tokens,
- ``<|endoftext|>`` is the end-of-text and padding token (no BOS, no unknown token).

Rebuild with ``python -m finwidget.demo.tokenizer --out DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# The pre-tokenizer regex of transformers' Qwen2Tokenizer (PRETOKENIZE_REGEX there).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
END_OF_TEXT = "<|endoftext|>"
MODEL_MAX_LENGTH = 2048
CORPUS_SEED = 9_000_001  # statements used to learn the merges (never used for training or evaluation)
CORPUS_SIZE = 400


def _empty_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    tokenizer = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                              fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def training_corpus(n: int = CORPUS_SIZE, seed: int = CORPUS_SEED, layout: str = "line") -> list[str]:
    """Demo prompts with their answers, the text the merges are learned from.

    ``layout``: the statements' layout (``make_statements``); the shipped demo model's
    tokenizer is learned from ``"line"`` statements, the layouts model's from ``"mixed"``.
    """
    from finwidget.demo.statements import make_statements

    return [f"{s.text}\nAnswer: {s.label}" for s in make_statements(n, seed, layout=layout)]


def build_tokenizer(corpus: list[str] | None = None):
    """Learn the byte-level BPE merges from ``corpus``; returns a ``tokenizers.Tokenizer``.

    The merges stop once every word of the corpus is one token, so the vocabulary
    holds the 256 byte symbols, ``<|endoftext|>`` and one token per merge.
    """
    from tokenizers import AddedToken, pre_tokenizers, trainers

    tokenizer = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(END_OF_TEXT, special=True, normalized=False)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus if corpus is not None else training_corpus(), trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer, folder: str | Path) -> Path:
    """Write ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``
    so that ``AutoTokenizer.from_pretrained(folder)`` loads it as a ``Qwen2Tokenizer``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer.model.save(str(folder))  # vocab.json + merges.txt
    eot_id = tokenizer.token_to_id(END_OF_TEXT)
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": None,
        "eos_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "added_tokens_decoder": {
            str(eot_id): {"content": END_OF_TEXT, "lstrip": False, "normalized": False,
                          "rstrip": False, "single_word": False, "special": True},
        },
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": END_OF_TEXT, "pad_token": END_OF_TEXT}, indent=2) + "\n")
    return folder


def main(argv: list[str] | None = None) -> None:
    from finwidget.demo import MODEL_DIR

    parser = argparse.ArgumentParser(description="Build the demo model's byte-level BPE tokenizer.")
    parser.add_argument("--out", default=str(MODEL_DIR), help="folder to write the tokenizer files to")
    parser.add_argument("--layout", default="line",
                        help="layout of the corpus statements: line (the shipped demo model), markdown, aligned "
                             "or mixed (the layouts model)")
    args = parser.parse_args(argv)
    tokenizer = build_tokenizer(training_corpus(layout=args.layout))
    save_tokenizer(tokenizer, args.out)
    print(f"wrote a {tokenizer.get_vocab_size()}-token tokenizer to {args.out}")


if __name__ == "__main__":
    main()
