"""The guide's "Comparative Analysis" snippet and its "Sample Analysis Pipeline", run as
written but for the import path, on the shipped demo model."""

from __future__ import annotations

import contextlib
import io

import pandas as pd
import pytest

COMPARATIVE = '''
from src.interpretability_tools import ComparativeAnalyzer

# Compare attention patterns between increase/decrease predictions
comparative = ComparativeAnalyzer(model, tokenizer)

increase_samples = [sample1, sample2, ...]  # Your increase prediction samples
decrease_samples = [sample3, sample4, ...]  # Your decrease prediction samples

comparison = comparative.compare_prediction_attention(increase_samples, decrease_samples)
comparative.plot_attention_comparison(comparison)
'''

# The guide's pipeline is a function it defines; what the user runs is the call.
PIPELINE_CALL = '''
from src.interpretability_tools import run_interpretability_experiment

aggregated = run_interpretability_experiment(data_samples, research_question)
'''


def guide(snippet: str, placeholders: dict[str, str] | None = None) -> str:
    code = snippet.replace("from src.interpretability_tools import", "from finwidget.interpretability_tools import")
    for old, new in (placeholders or {}).items():
        code = code.replace(old, new)
    return code


def run(code: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        exec(compile(code, "<guide>", "exec"), namespace)  # noqa: S102 - the guide's own code
    return out.getvalue()


@pytest.fixture(scope="module")
def demo():
    from finwidget import load_demo_model, predict
    from finwidget.demo import make_statements

    model, tokenizer = load_demo_model()
    statements = make_statements(40, seed=4242)
    predicted = [p.label for p in predict(model, tokenizer, [s.text for s in statements])]
    return model, tokenizer, statements, predicted


@pytest.mark.parametrize("kind", ["strings", "demo statements", "DataFrame rows"])
def test_guide_comparative_analysis(demo, kind):
    model, tokenizer, statements, predicted = demo
    inc = [s for s, p in zip(statements, predicted) if p == "increase"]
    dec = [s for s, p in zip(statements, predicted) if p == "decrease"]
    if kind == "strings":
        inc, dec = [s.text for s in inc], [s.text for s in dec]
    elif kind == "DataFrame rows":
        frame = pd.DataFrame({"text": [s.text for s in statements], "label": [s.label for s in statements]})
        inc = [row for (_, row), p in zip(frame.iterrows(), predicted) if p == "increase"]
        dec = [row for (_, row), p in zip(frame.iterrows(), predicted) if p == "decrease"]
    # the guide's placeholders "[sample1, sample2, ...]" become the lists
    code = guide(COMPARATIVE, {"[sample1, sample2, ...]": "INC", "[sample3, sample4, ...]": "DEC"})
    namespace = {"model": model, "tokenizer": tokenizer, "INC": inc, "DEC": dec}
    run(code + "\nplots = comparative.plot_attention_comparison(comparison)\n", namespace)
    comparison = namespace["comparison"]
    sizes = comparison.settings["group_sizes"]
    assert sizes == {"increase": len(inc), "decrease": len(dec)}
    heads = model.config.num_hidden_layers * model.config.num_attention_heads
    assert len(comparison.table) == heads * comparison.table["metric"].nunique()
    # the model card's reading heads differ between the two predictions at the answer position
    top = comparison.top(2, by="q")
    assert set(top["layer"]) == {1} and (top["q"] < 0.05).all(), comparison.summary()
    plots = namespace["plots"]
    import ipywidgets

    assert isinstance(plots, ipywidgets.VBox)
    assert {type(f).__name__ for f in (plots.heatmap, plots.volcano, plots.top_heads, plots.scatter)} == {"Figure"}


def test_guide_pipeline(demo):
    model, tokenizer, statements, _ = demo
    namespace = {"model": model, "tokenizer": tokenizer, "data_samples": statements,
                 "research_question": "Do later layers weight the recent year more than the prior one?"}
    run(guide(PIPELINE_CALL), namespace)
    findings = namespace["aggregated"]
    assert findings.table["statement"].nunique() == len(statements)
    assert {"label", "confidence", "recent_vs_prior_year", "large_vs_small_numbers", "financial_vs_other_words",
            "layer_band", "correlation"} <= set(findings.comparisons)
    assert "research question: Do later layers" in findings.summary()
    # a named question runs that comparison alone
    namespace["research_question"] = "recent_vs_prior_year"
    run(guide(PIPELINE_CALL), namespace)
    assert list(namespace["aggregated"].comparisons) == ["recent_vs_prior_year"]


def test_guide_pipeline_without_a_model_says_so():
    from finwidget.errors import InputError
    from finwidget.interpretability_tools import run_interpretability_experiment

    with pytest.raises(InputError, match="needs a model and tokenizer"):
        run_interpretability_experiment(["a statement"], "label")


def test_empty_sample_list_is_an_error(demo):
    from finwidget.errors import InputError
    from finwidget.interpretability_tools import ComparativeAnalyzer

    model, tokenizer, statements, _ = demo
    with pytest.raises(InputError, match="decrease_samples is empty"):
        ComparativeAnalyzer(model, tokenizer).compare_prediction_attention([statements[0].text], [])
