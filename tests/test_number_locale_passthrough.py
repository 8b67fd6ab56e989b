"""``number_locale`` reaches the statement reader from the analyzer and the explorer."""

from __future__ import annotations

import warnings

import pytest

from finwidget.errors import InputError

GERMAN = "Revenue 1.234,56\nNet income 2.000,50\nQuestion: will earnings increase?"


def _number_values(layout) -> list:
    return [span.value for span in layout.spans if span.kind == "number"]


def test_analyzer_reads_numbers_with_the_locale_it_is_given(demo):
    from finwidget.analysis import FinancialAttentionAnalyzer

    model, tokenizer, task = demo
    german = FinancialAttentionAnalyzer.from_model(model, tokenizer, GERMAN, task=task, number_locale="de")
    assert _number_values(german.layout)[:2] == [1234.56, 2000.5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "en" warns that it cannot read the German numbers
        english = FinancialAttentionAnalyzer.from_model(model, tokenizer, GERMAN, task=task)
    assert _number_values(english.layout)[:2] == [None, None]
    # the same through the constructor (captured attention + text)
    again = FinancialAttentionAnalyzer(german.source, tokenizer, text=GERMAN, task=task, number_locale="de")
    assert _number_values(again.layout) == _number_values(german.layout)


def test_explorer_reads_numbers_with_the_locale_it_is_given(demo):
    from finwidget.widgets import AttentionExplorer

    model, tokenizer, task = demo
    explorer = AttentionExplorer(model, tokenizer, [GERMAN, GERMAN.replace("2.000", "3.000")], task=task,
                                 number_locale="de")
    assert _number_values(explorer.session.layout)[:2] == [1234.56, 2000.5]
    explorer.show_statement(1)  # a statement opened later is read with the same locale
    assert _number_values(explorer.session.layout)[:2] == [1234.56, 3000.5]
    shown = [s["value"] for s in explorer.statement_layout["spans"] if s["kind"] == "number"]
    assert shown[:2] == [1234.56, 3000.5]


def test_a_bad_locale_is_refused_before_the_model_runs(demo):
    from finwidget.analysis import FinancialAttentionAnalyzer
    from finwidget.widgets import AttentionExplorer

    model, tokenizer, task = demo
    with pytest.raises(InputError, match="number_locale"):
        AttentionExplorer(model, tokenizer, GERMAN, task=task, number_locale="fr")
    with pytest.raises(InputError, match="number_locale"):
        FinancialAttentionAnalyzer.from_model(model, tokenizer, GERMAN, task=task, number_locale="fr")
