"""The demo tokenizer loads the way users load real models and splits text like Qwen2's."""

import re

import pytest

from finwidget.demo import MODEL_DIR, make_statements
from finwidget.task import EarningsTask


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    task = EarningsTask(tokenizer)
    return [task.prompt(s.text) for s in make_statements(40, 31)]


def test_auto_tokenizer_gives_qwen2_tokenizer_with_padding_and_end_tokens(tokenizer):
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    assert isinstance(tokenizer, Qwen2Tokenizer)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id < len(tokenizer)
    assert tokenizer.chat_template is None  # the demo uses the plain prompt template


def test_same_ids_as_the_tokenizers_file_and_exact_round_trip(tokenizer, prompts):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    for prompt in prompts:
        ids = tokenizer(prompt)["input_ids"]
        assert ids == raw.encode(prompt).ids
        assert tokenizer.decode(ids) == prompt


def test_answer_words_are_single_tokens(tokenizer):
    task = EarningsTask(tokenizer)
    assert task.answers_are_single_tokens
    for word in (" increase", " decrease"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1


def test_every_digit_is_its_own_token_and_space_before_a_number_too(tokenizer, prompts):
    for prompt in prompts:
        enc = tokenizer(prompt, return_offsets_mapping=True)
        pieces = [prompt[a:b] for a, b in enc["offset_mapping"]]
        assert "".join(pieces) == prompt  # offsets tile the text
        for piece in pieces:
            if any(ch.isdigit() for ch in piece):
                assert re.fullmatch(r"\d", piece), piece
        for match in re.finditer(r" (?=\d)", prompt):
            assert (match.start(), match.end()) in [tuple(o) for o in enc["offset_mapping"]]


def test_offsets_point_at_the_token_text(tokenizer, prompts):
    prompt = prompts[0]
    enc = tokenizer(prompt, return_offsets_mapping=True)
    for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        assert tokenizer.decode([token_id]) == prompt[start:end]


def test_any_text_encodes_and_decodes(tokenizer):
    text = "Résumé: 12,5 % <script>alert('x')</script> 負債 \t\n€"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_rebuilding_gives_the_shipped_vocabulary(tmp_path):
    from tokenizers import Tokenizer

    from finwidget.demo.tokenizer import build_tokenizer, save_tokenizer

    save_tokenizer(build_tokenizer(), tmp_path)
    rebuilt = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    shipped = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    assert rebuilt.get_vocab() == shipped.get_vocab()
    assert (tmp_path / "merges.txt").read_text() == (MODEL_DIR / "merges.txt").read_text()
