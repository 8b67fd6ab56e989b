"""The guide's population API: ``ComparativeAnalyzer`` and ``run_interpretability_experiment``.

Glue between ``finwidget.population`` (measuring and statistics) and the widget layer
(``finwidget.widgets.population_plots``); importable as
``from finwidget.interpretability_tools import ComparativeAnalyzer, run_interpretability_experiment``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import pandas as pd

from finwidget.errors import InputError
from finwidget.population import comparison as cmp
from finwidget.population.datasets import read_dataset
from finwidget.population.measure import measure_statements
from finwidget.population.metrics import PREDICTION_METRICS


class ComparativeAnalyzer:
    """Compares attention between two sets of statements.

    Args:
        model, tokenizer: the causal LM and its tokenizer.
        batch_size: statements per batched forward pass.
        task: the ``EarningsTask`` building prompts (default ``EarningsTask(tokenizer)``).
        progress: show a progress bar while measuring.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 8, task=None, progress: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.task, self.progress = batch_size, task, progress

    def measure(self, samples) -> pd.DataFrame:
        """The metric table of ``samples`` (strings, demo statements, DataFrame rows, a DataFrame ...)."""
        return measure_statements(self.model, self.tokenizer, samples, batch_size=self.batch_size, task=self.task,
                                  progress=self.progress)

    def compare_prediction_attention(self, increase_samples, decrease_samples, metrics=PREDICTION_METRICS, *,
                                     test: str = "welch", permutations: int = 999, bootstrap: int = 999,
                                     confidence: float = 0.95, seed: int = 0) -> cmp.Comparison:
        """Every head's attention at the prediction position, first set against the second.

        The two lists are the user's grouping (the guide: statements the model predicts
        "increase" vs "decrease"); ``metrics`` default to the answer-position metrics
        (``finwidget.population.metrics.PREDICTION_METRICS``). Returns a ``Comparison`` (first
        minus second: positive Hedges' g = more in the first set).
        """
        frames = []
        for name, samples in (("increase", increase_samples), ("decrease", decrease_samples)):
            if samples is None or (hasattr(samples, "__len__") and len(samples) == 0):
                raise InputError(f"{name}_samples is empty: pass at least one statement in each group")
            frames.append(read_dataset(samples if not isinstance(samples, pd.Series) else [samples]).assign(
                sample_group=name))
        frame = pd.concat(frames, ignore_index=True)
        table = self.measure(frame)
        comparison = cmp.compare_groups(table, "sample_group", groups=("increase", "decrease"), metrics=metrics,
                                        test=test, permutations=permutations, bootstrap=bootstrap,
                                        confidence=confidence, seed=seed)
        comparison.settings.update(title="increase_samples vs decrease_samples",
                                   description="attention at the prediction position, per head")
        return comparison

    def plot_attention_comparison(self, comparison: cmp.Comparison, **kwargs):
        """The comparison's linked bqplot figures (``ComparisonPlots``, an ipywidgets VBox)."""
        from finwidget.widgets.population_plots import ComparisonPlots

        return ComparisonPlots(comparison, **kwargs)


@dataclass
class ExperimentFindings:
    """What ``run_interpretability_experiment`` returns: the question, the metric table
    (one row per statement x layer x head) and the comparisons run on it."""

    research_question: str
    table: pd.DataFrame
    comparisons: dict[str, cmp.Comparison] = field(default_factory=dict)

    def summary(self, n: int = 3) -> str:
        parts = [f"research question: {self.research_question}",
                 f"statements: {self.table['statement'].nunique()}"]
        parts += [f"\n[{name}]\n{comparison.summary(n)}" for name, comparison in self.comparisons.items()]
        return "\n".join(parts)

    def __repr__(self) -> str:
        return self.summary()

    def plot(self, name: str | None = None, **kwargs):
        """Linked figures of one comparison (default: the first with per-head rows)."""
        from finwidget.widgets.population_plots import ComparisonPlots

        if name is None:
            name = next(k for k, c in self.comparisons.items() if "head" in c.table)
        return ComparisonPlots(self.comparisons[name], **kwargs)


#: research questions by name -> the comparisons that answer them
QUESTIONS = {
    "label": ("label",), "predicted": ("predicted",), "correct": ("correct",), "confidence": ("confidence",),
    "recent_vs_prior_year": ("recent_vs_prior_year",), "large_vs_small_numbers": ("large_vs_small_numbers",),
    "financial_vs_other_words": ("financial_vs_other_words",), "layer_band": ("layer_band",),
    "correlation": ("correlation",),
}
_ALL = ("label", "predicted", "confidence", "recent_vs_prior_year", "large_vs_small_numbers",
        "financial_vs_other_words", "layer_band", "correlation")


def _caller_globals(name: str):
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back
        return caller.f_globals.get(name) if caller is not None else None
    finally:
        del frame


def run_interpretability_experiment(data_samples, research_question: str, model=None, tokenizer=None, *,
                                    batch_size: int = 8, permutations: int = 999, bootstrap: int = 999,
                                    seed: int = 0, progress: bool = True) -> ExperimentFindings:
    """The guide's sample analysis pipeline: measure every statement, then test.

    Args:
        data_samples: statements (anything ``read_dataset`` takes).
        research_question: a name from ``QUESTIONS`` (e.g. ``"confidence"``,
            ``"recent_vs_prior_year"``) for that comparison alone, or the question in words,
            kept with the results, for every ready-made comparison.
        model, tokenizer: default to the caller's global ``model`` and ``tokenizer``, as the
            guide's own function reads them.

    Returns:
        ``ExperimentFindings`` (``.table``, ``.comparisons``, ``.summary()``, ``.plot()``).
        Groupings by label need a ``label`` column (skipped, and said so, without one).
    """
    model = model if model is not None else _caller_globals("model")
    tokenizer = tokenizer if tokenizer is not None else _caller_globals("tokenizer")
    if model is None or tokenizer is None:
        raise InputError("run_interpretability_experiment needs a model and tokenizer: pass model=, tokenizer= "
                         "(or define global `model` and `tokenizer`, as the guide does)")
    if not isinstance(research_question, str) or not research_question.strip():
        raise InputError("research_question must be a non-empty string (a name from QUESTIONS or your question)")
    table = measure_statements(model, tokenizer, data_samples, batch_size=batch_size, progress=progress)
    names = QUESTIONS.get(research_question.strip(), _ALL)
    has_label = table["label"].notna().all() if "label" in table else False
    findings = ExperimentFindings(research_question, table)
    options = {"bootstrap": bootstrap, "seed": seed}
    for name in names:
        if name in ("label", "correct") and not has_label:
            continue
        if name in ("label", "predicted", "correct", "confidence"):
            sizes = cmp.group_labels(table, name)[0].value_counts()
            if len(sizes) < 2:  # e.g. every prediction the same: nothing to compare
                continue
            findings.comparisons[name] = cmp.compare_groups(table, name, permutations=permutations, **options)
        elif name == "layer_band":
            if table["layer"].nunique() > 1:
                findings.comparisons[name] = cmp.layer_band(table, **options)
        elif name == "correlation":
            findings.comparisons[name] = cmp.correlate(table)
        else:
            findings.comparisons[name] = getattr(cmp, name)(table, **options)
    return findings
