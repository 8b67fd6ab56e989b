"""Populations of statements: per-head metrics over many statements and honest statistics.

- ``measure_statements``: the metric table (one row per statement x layer x head);
- ``compare_groups``, ``compare_within`` and the ready-made contrasts, ``correlate``:
  ``Comparison`` results (scipy tests, Hedges' g with bootstrap intervals,
  Benjamini-Hochberg q-values);
- ``compare_models``: two models (base vs fine-tuned, two sizes, two geometries) on the
  same statements, head by head and line by line, with paired tests and q-values
  (``ModelComparison``);
- ``Experiment``: the same, streamed to a Parquet dataset, resumable, reproducible from
  its manifest, shardable with accelerate.

Never imports the widget layer.
"""

from finwidget.population.comparison import (
    Comparison,
    compare_groups,
    compare_within,
    correlate,
    financial_vs_other_words,
    group_labels,
    large_vs_small_numbers,
    layer_band,
    recent_vs_prior_year,
)
from finwidget.population.datasets import read_dataset
from finwidget.population.experiment import Experiment, ExperimentError, ExperimentResult, read_manifest
from finwidget.population.measure import measure_statements
from finwidget.population.metrics import METRICS, statement_head_metrics
from finwidget.population.model_comparison import ModelComparison, compare_models
from finwidget.population.statistics import StatisticsWarning

__all__ = [
    "METRICS",
    "Comparison",
    "Experiment",
    "ExperimentError",
    "ExperimentResult",
    "ModelComparison",
    "StatisticsWarning",
    "compare_groups",
    "compare_models",
    "compare_within",
    "correlate",
    "financial_vs_other_words",
    "group_labels",
    "large_vs_small_numbers",
    "layer_band",
    "measure_statements",
    "read_dataset",
    "read_manifest",
    "recent_vs_prior_year",
    "statement_head_metrics",
]
