"""The reader on the corpus of statement excerpts, with Qwen2's tokenizer and the demo model's.

Every expectation of every excerpt (line items, each number's span, value, year and
line item, footnote markers, year spans) is checked. An excerpt may list
``known_misses``: expectations the reader is known to get wrong, with the reason; the
test then asserts that exactly those fail, so a fix shows up as an unexpected pass.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pytest
import qwen2_tokenizer
from reader_corpus import check_excerpt, excerpt_text, load_corpus, read_excerpt
from test_statement import check_invariants

from finwidget.statement import NumberFormatWarning, read_statement

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "finwidget" / "demo" / "model"
CORPUS = load_corpus()
FORMS = ("pipe", "labels", "aligned", "html", "csv", "prose")

qwen2_tok = qwen2_tokenizer.qwen2_tok  # the session-scoped fixture


@pytest.fixture(scope="module")
def demo_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


@pytest.fixture(params=["qwen2", "demo"])
def tokenizer(request):
    return request.getfixturevalue("qwen2_tok" if request.param == "qwen2" else "demo_tok")


def test_the_corpus_covers_every_form():
    assert len(CORPUS) >= 40
    ids = [e["id"] for e in CORPUS]
    assert len(set(ids)) == len(ids)
    counts = Counter(e["form"] for e in CORPUS)
    assert set(counts) == set(FORMS), counts
    assert all(counts[f] >= 2 for f in FORMS), counts
    assert sum(1 for e in CORPUS if e.get("number_locale", "en") != "en") >= 3


@pytest.mark.parametrize("excerpt", CORPUS, ids=[e["id"] for e in CORPUS])
def test_reader_meets_the_corpus(excerpt, tokenizer):
    checks = check_excerpt(excerpt, tokenizer)
    assert len(checks) >= 3
    failed = {c.what: c.detail for c in checks if not c.ok}
    known = excerpt.get("known_misses", {})
    unexpected = {what: detail for what, detail in failed.items() if what not in known}
    assert not unexpected, f"{excerpt['id']}: {unexpected}"
    fixed = sorted(set(known) - set(failed))
    assert not fixed, f"{excerpt['id']}: now read right, remove from known_misses: {fixed}"
    check_invariants(read_excerpt(excerpt, tokenizer))


def test_unreadable_numbers_warn_and_name_the_locale(tokenizer):
    excerpt = next(e for e in CORPUS if e["id"] == "locale-en-refuses-indian-grouping")
    with pytest.warns(NumberFormatWarning, match="number_locale='in'"):
        read_statement(excerpt_text(excerpt), tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumberFormatWarning)
        layout = read_statement(excerpt_text(excerpt), tokenizer, number_locale="in")
    assert [s.value for s in layout.spans if s.kind == "number"][:2] == [1234567.0, 987654.0]


def test_the_task_prompt_reads_the_statement_the_same(tokenizer):
    """Inside the task's prompt (Qwen2: its chat template) every excerpt reads as it does alone."""
    from finwidget.task import EarningsTask

    task = EarningsTask(tokenizer)

    def numbers(layout):
        return [(s.text.strip(), s.value, s.year, s.line_item) for s in layout.spans
                if s.kind == "number" and s.in_statement]

    for excerpt in CORPUS:
        alone = read_excerpt(excerpt, tokenizer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumberFormatWarning)
            prompted = read_statement(excerpt_text(excerpt), tokenizer, task=task,
                                      number_locale=excerpt.get("number_locale", "en"))
        assert numbers(prompted) == numbers(alone), excerpt["id"]
        assert [i.name for i in prompted.line_items] == [i.name for i in alone.line_items], excerpt["id"]
