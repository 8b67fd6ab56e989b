"""Text and character offsets for token ids the model actually ran.

``read_statement`` normally tokenizes the text itself. Generated sequences are not
always the tokenizer's own tokenization of their text (the model may emit " " then
"2" where the tokenizer would merge them), so for those the text is rebuilt from the
ids: for byte-level BPE tokenizers (Qwen2, GPT-2, Llama 3) each token's bytes are
concatenated and decoded once, which gives exact offsets; for other tokenizers each
prefix is decoded in turn (slower, quadratic in length).
"""

from __future__ import annotations

import codecs
from functools import lru_cache


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """The printable character byte-level BPE uses for each byte -> that byte.

    Bytes that are printable and not whitespace stand for themselves; the others are
    given the characters from U+0100 upward, in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(0x100 + extra)] = byte
            extra += 1
    return table


def text_and_offsets(ids: list[int], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """``(text, [(char_start, char_end)] per token)`` for exactly these ids."""
    pieces = _byte_pieces(ids, tokenizer)
    if pieces is not None:
        return _from_bytes(pieces)
    return _from_prefixes(ids, tokenizer)


def _byte_pieces(ids: list[int], tokenizer) -> list[bytes] | None:
    alphabet = _byte_level_alphabet()
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens = tokenizer.convert_ids_to_tokens(ids)
    pieces = []
    for token_id, token in zip(ids, tokens):
        if token_id in added:
            pieces.append(str(added[token_id]).encode("utf-8"))
            continue
        if token is None or any(ch not in alphabet for ch in token):
            return None
        pieces.append(bytes(alphabet[ch] for ch in token))
    return pieces


def _from_bytes(pieces: list[bytes]) -> tuple[str, list[tuple[int, int]]]:
    data = b"".join(pieces)
    # character index of every byte, decoding one byte at a time so that invalid or cut
    # sequences (each replaced by U+FFFD) still map every byte to a character of the text
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chunks: list[str] = []
    byte_to_char: list[int] = []
    pending: list[int] = []
    length = 0
    for index in range(len(data) + 1):
        final = index == len(data)
        produced = decoder.decode(b"" if final else data[index:index + 1], final=final)
        if not final:
            pending.append(index)
        if produced:
            byte_to_char.extend([length] * len(pending))
            pending = []
            chunks.append(produced)
            length += len(produced)
    byte_to_char.extend([max(length - 1, 0)] * len(pending))
    text = "".join(chunks)
    offsets, cursor = [], 0
    for piece in pieces:
        start_byte, end_byte = cursor, cursor + len(piece)
        cursor = end_byte
        if end_byte == start_byte or not text:
            offsets.append((min(byte_to_char[start_byte], len(text)) if start_byte < len(byte_to_char) else len(text),) * 2)
            continue
        start = byte_to_char[start_byte]
        end = min(byte_to_char[end_byte - 1] + 1, len(text))
        offsets.append((start, max(start, end)))
    return text, offsets


def _from_prefixes(ids: list[int], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    offsets, previous = [], ""
    for k in range(1, len(ids) + 1):
        current = tokenizer.decode(ids[:k], clean_up_tokenization_spaces=False)
        start = len(previous) if current.startswith(previous) else len(_common_prefix(previous, current))
        offsets.append((start, len(current)))
        previous = current
    return previous, offsets


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
