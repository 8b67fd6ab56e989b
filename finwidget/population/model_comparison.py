"""Two models, head by head: the same statements through both, per-head metrics and
ablation effects side by side, with paired statistics across statements.

``compare_models(model_a, model_b, statements, tokenizer_a=...)`` measures, for every
statement and both models:

- **per head** (one value per statement, layer and head):
  - the population metrics of ``statement_head_metrics`` (``METRICS``: e.g.
    ``answer_numbers``, ``answer_financial``, ``entropy``);
  - ``line_attention:<item>``: the answer position's attention mass on the tokens of one
    line item's line (its name, change and yearly values: every span of that line but the
    line break), from ``span_attention_from``: the grid's ``attention_to_selection``
    (``HEAD_MEASURES``) with that line selected;
  - ``ablation_effect`` / ``ablation_abs_effect``: the change (signed / absolute) of the
    logit difference when the head alone is ablated (``sweep_heads``: ``"mean"`` = its
    output replaced by its average over the compared statements in that model, or
    ``"zero"``);
- **per line item** (one value per statement and line item, comparable across models of
  any geometry), the line-level readout:
  - ``line_dependence``: ``|change of the logit difference|`` when the line's tokens are
    ablated at the input (their input embeddings set to zero, ``line_ablation="zero"``,
    or to the mean input embedding of the prompt's tokens, ``"mean"``): how much the answer
    depends on that line. Zeroing a line removes its evidence, whichever way it points,
    so the dependence can be one-sided (the demo model needs operating cash flow's line
    only where net income rose: see ``finwidget/demo/net_income_model/MODEL_CARD.md``);
  - ``line_attention``: the answer position's attention to the line, averaged over every
    head of every layer.

Heads are matched by position when both models have the same number of layers and heads,
and by behaviour otherwise (``match="behaviour"`` forces it): each head's profile is its
metrics over the statements (every per-head measure, each z-scored over both models'
values), the similarity of two heads is the Pearson correlation of their profiles, and
``scipy.optimize.linear_sum_assignment`` pairs the heads so the summed similarity is
largest. Every pair's similarity is reported either way.

Each (pair of heads, measure) and each (line item, line measure) is one paired test
across the statements (``paired_tests``: paired t and Wilcoxon, paired Hedges' g with a
bootstrap interval); Benjamini-Hochberg q-values are computed over every test of the
comparison, and a row is significant only by its q-value.

Never imports the widget layer (``finwidget.widgets.population_plots.plot_model_comparison``
draws the heat map).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from finwidget.errors import InputError
from finwidget.population import statistics as st
from finwidget.population.metrics import METRICS

LINE_ATTENTION = "line_attention"  # per head: "line_attention:<item>"
ABLATION_MEASURES = ("ablation_effect", "ablation_abs_effect")
LINE_MEASURES = ("line_dependence", "line_attention")
DEFAULT_MEASURES = ("answer_numbers", "answer_financial", "entropy", LINE_ATTENTION)
ABLATIONS = ("mean", "zero", None)
LINE_ABLATIONS = ("zero", "mean", None)
TESTS = {"paired_t": "p_paired_t", "wilcoxon": "p_wilcoxon"}


@dataclass
class ModelMeasurements:
    """What one model gave on the statements.

    heads: ``(layer, head)`` in flat order (layer-major), ``[K]``.
    head_measures: the per-head measure names, ``[M]``.
    head_values: ``[n, K, M]`` float64 (NaN where undefined, e.g. a line the statement lacks).
    line_items: the line item names, ``[I]``.
    line_values: ``{line measure: [n, I]}`` float64.
    logit_diff: ``[n]`` clean logit differences (increase - decrease).
    """

    heads: list[tuple[int, int]]
    head_measures: list[str]
    head_values: np.ndarray
    line_items: list[str]
    line_values: dict[str, np.ndarray]
    logit_diff: np.ndarray
    num_layers: int
    num_heads: int


@dataclass
class ModelComparison:
    """The result of ``compare_models``.

    ``table``: one row per test. Columns: ``level`` (``"head"`` or ``"line"``), ``measure``,
    ``layer_a``, ``head_a``, ``layer_b``, ``head_b`` and ``similarity`` (head rows),
    ``line_item`` (line rows, and the item of ``line_attention:<item>`` head rows), ``n``,
    ``mean_a``, ``mean_b``, ``difference`` (mean of b - a over the statements),
    ``hedges_g`` (paired, of b - a) with ``g_low``/``g_high``, ``t``, ``p_paired_t``, ``w``,
    ``p_wilcoxon``, ``p`` (the primary test's), ``q`` (Benjamini-Hochberg over every row),
    ``significant`` (``q < alpha``).
    ``matching``: one row per matched pair (``layer_a, head_a, layer_b, head_b,
    similarity``) plus the heads left unmatched (the other side NaN).
    ``similarity``: ``[K_a, K_b]`` profile correlations (rows: model a's heads, layer-major).
    """

    table: pd.DataFrame
    matching: pd.DataFrame
    similarity: np.ndarray
    settings: dict = field(default_factory=dict)
    measurements: tuple[ModelMeasurements, ModelMeasurements] | None = field(default=None, repr=False)

    @property
    def names(self) -> tuple[str, str]:
        return tuple(self.settings.get("names", ("a", "b")))  # type: ignore[return-value]

    def significant(self) -> pd.DataFrame:
        """The significant rows (by q), largest |Hedges' g| first."""
        hits = self.table.loc[self.table["significant"].astype(bool)]
        return hits.assign(_abs=hits["hedges_g"].abs()).sort_values("_abs", ascending=False, kind="stable").drop(
            columns="_abs").reset_index(drop=True)

    def lines(self, measure: str = "line_dependence") -> pd.DataFrame:
        """The line-level rows of one line measure, one per line item (the readout: "the
        operating-cash-flow path weakened" is one row)."""
        if measure not in LINE_MEASURES:
            raise InputError(f"measure must be one of {LINE_MEASURES}, got {measure!r}")
        rows = self.table.loc[(self.table["level"] == "line") & (self.table["measure"] == measure)]
        return rows.reset_index(drop=True)

    def head_rows(self, measure: str) -> pd.DataFrame:
        """The per-head rows of one measure (one per matched pair)."""
        rows = self.table.loc[(self.table["level"] == "head") & (self.table["measure"] == measure)]
        if rows.empty:
            known = sorted(set(self.table.loc[self.table["level"] == "head", "measure"]))
            raise InputError(f"no per-head rows for measure {measure!r}; measured: {known}")
        return rows.reset_index(drop=True)

    def summary(self, n: int = 8) -> str:
        """Text: what was compared, the matching, the line-level readout and the largest
        significant per-head differences, each with n, effect size and CI, p and q."""
        s = self.settings
        a, b = self.names
        alpha = s["alpha"]
        lines = [f"model comparison: {a!r} vs {b!r} on n = {s['n']} statements (differences are {b} - {a})",
                 (f"heads matched by {s['matched_by']}: {len(self.matching.dropna())} pairs, similarity "
                 f"(profile correlation) mean {np.nanmean(self.matching['similarity']):.3f}, "
                 f"min {np.nanmin(self.matching['similarity']):.3f}")]
        tested = int(np.isfinite(self.table["q"]).sum())
        lines.append(f"test: {s['test']} (paired across statements), Benjamini-Hochberg over all {tested} tests "
                     f"with a p-value: {int(np.count_nonzero(self.table['significant'].to_numpy()))} with q < {alpha:g}")

        def describe(row) -> str:
            ci = f" [{s['confidence']:.0%} CI {row['g_low']:.2f}, {row['g_high']:.2f}]" if np.isfinite(
                row["g_low"]) else ""
            verdict = "significant" if row["significant"] else "not significant" if np.isfinite(row["q"]) else \
                "no test (identical values)"
            return (f"{row['measure']}: {a} {row['mean_a']:.3f} -> {b} {row['mean_b']:.3f} (n = {int(row['n'])}), "
                    f"g = {row['hedges_g']:.2f}{ci}, p = {_fmt(row['p'])}, q = {_fmt(row['q'])} ({verdict})")

        line_rows = self.table.loc[self.table["level"] == "line"]
        if not line_rows.empty:
            lines.append("line items (how much the answer depends on each line):")
            for row in line_rows.to_dict("records"):
                lines.append(f"  {row['line_item']}: {describe(row)}")
        heads = self.significant()
        heads = heads.loc[heads["level"] == "head"].head(n)
        lines.append(f"per head, largest significant |g| ({len(heads)} shown):" if len(heads) else
                     "per head: no significant difference")
        for row in heads.to_dict("records"):
            lines.append(f"  L{int(row['layer_a'])}H{int(row['head_a'])} ({a}) ~ L{int(row['layer_b'])}H"
                         f"{int(row['head_b'])} ({b}), similarity {row['similarity']:.2f}: {describe(row)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(self.summary())


def _fmt(p) -> str:
    return "nan" if not np.isfinite(p) else f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


# ---------------------------------------------------------------- inputs
def _texts(statements) -> list[str]:
    if isinstance(statements, str):
        statements = [statements]
    try:
        texts = [s if isinstance(s, str) else s.text for s in statements]
    except (TypeError, AttributeError):
        raise InputError("statements must be a list of statement texts or demo Statements") from None
    if len(texts) < 2:
        raise InputError(f"compare at least two statements (paired tests need n >= 2), got {len(texts)}")
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise InputError("every statement must be a non-empty text")
    return texts


def _check_measures(measures) -> tuple[list[str], bool]:
    """``(population metrics, whether the per-line answer attention is wanted)``."""
    if isinstance(measures, str):
        measures = [measures]
    measures = list(measures)
    known = set(METRICS) | {LINE_ATTENTION}
    unknown = [m for m in measures if m not in known]
    if unknown:
        raise InputError(f"unknown measure(s) {unknown}; use population metrics ({', '.join(METRICS)}) "
                         f"or {LINE_ATTENTION!r} (ablation effects come with ablation=)")
    return [m for m in measures if m in METRICS], LINE_ATTENTION in measures


def _line_spans(layout, item) -> list:
    """The spans of a line item's line (name, numbers, words, punctuation; not the break)."""
    return [s for s in layout.spans if s.line == item.line and s.kind != "break" and s.in_statement]


def _default_line_items(layouts) -> list[str]:
    """Line items present in at least half of the statements, in first-seen order."""
    counts: dict[str, int] = {}
    for layout in layouts:
        for name in dict.fromkeys(item.name for item in layout.line_items):
            counts[name] = counts.get(name, 0) + 1
    return [name for name, count in counts.items() if count * 2 >= len(layouts)]


def _find_item(layout, name: str):
    for item in layout.line_items:
        if item.name.lower() == name.lower():
            return item
    return None


# ---------------------------------------------------------------- measuring one model
def _encode(task, texts, model):
    from finwidget.task import context_length, model_device

    return task.encode(list(texts), max_length=context_length(model), device=model_device(model))


def _attention_rows(model, task, texts, layouts, metrics, items, batch_size):
    """``(values [n, K, M], logit_diff [n])``: population metrics then per-line answer attention."""
    from finwidget.analysis.prediction import span_attention_from
    from finwidget.capture import capture_attention
    from finwidget.population.measure import batch_plan
    from finwidget.population.metrics import statement_head_metrics
    from finwidget.task import eval_mode

    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    values = np.full((len(texts), L * H, len(metrics) + len(items)), np.nan)
    diffs = np.full(len(texts), np.nan)
    for rows in batch_plan([layout.num_tokens for layout in layouts], batch_size):
        batch = _encode(task, [texts[i] for i in rows], model)
        with capture_attention(model) as cap, torch.inference_mode(), eval_mode(model):
            out = model(**batch, logits_to_keep=1)
        predictions = task.predictions(out.logits[:, -1, :], batch["attention_mask"])
        try:
            for row, index in enumerate(rows):
                layout = layouts[index]
                diffs[index] = predictions[row].logit_diff
                if metrics:
                    table = statement_head_metrics(cap, layout, batch=row, names=metrics)
                    table = table.sort_values(["layer", "head"], kind="stable")
                    values[index, :, :len(metrics)] = table[metrics].to_numpy(dtype=np.float64)
                if items:
                    _, answer = span_attention_from(cap, layout, position=-1, batch=row)  # [L, H, S]
                    flat = answer.reshape(L * H, -1).double().numpy()
                    for j, name in enumerate(items):
                        item = _find_item(layout, name)
                        if item is not None:
                            spans = [s.index for s in _line_spans(layout, item)]
                            values[index, :, len(metrics) + j] = flat[:, spans].sum(axis=1)
        finally:
            cap.release()
    return values, diffs


def _ablation_rows(model, task, texts, mode, batch_size) -> np.ndarray:
    """``[n, K, 2]``: signed and absolute change of the logit difference per head ablation."""
    from finwidget.interventions.sweep import sweep_heads

    sweep = sweep_heads(model, task, texts, mode=mode, reference=texts if mode == "mean" else None,
                        progress=False, batch_size=batch_size)
    if "statement" not in sweep:
        sweep = sweep.assign(statement=0)
    sweep = sweep.sort_values(["statement", "layer", "head"], kind="stable")
    K = model.config.num_hidden_layers * model.config.num_attention_heads
    change = sweep["change"].to_numpy(dtype=np.float64).reshape(len(texts), K)
    return np.stack([change, np.abs(change)], axis=-1)


class _EmbeddingAblation:
    """A forward hook on the input embeddings that replaces the rows of ``mask`` (``[B, T]``
    bool): by zero, or by the mean embedding of the row's prompt tokens (padding left out)."""

    def __init__(self, mode: str, mask: torch.Tensor, attention_mask: torch.Tensor):
        self.mode, self.mask, self.attention_mask = mode, mask, attention_mask

    def __call__(self, module, args, output):
        edited = output.clone()
        mask = self.mask.to(output.device)
        if self.mode == "zero":
            edited[mask] = 0.0
        else:
            real = self.attention_mask.to(output.device).unsqueeze(-1).to(output.dtype)  # [B, T, 1]
            mean = (output * real).sum(1) / real.sum(1).clamp(min=1)  # [B, D]
            edited = torch.where(mask.unsqueeze(-1), mean.unsqueeze(1).expand_as(output), edited)
        return edited


def _line_dependence(model, task, texts, layouts, items, mode, batch_size) -> np.ndarray:
    """``[n, I]``: |change of the logit difference| when each line's tokens are ablated at the input."""
    from finwidget.population.measure import batch_plan
    from finwidget.task import eval_mode

    out = np.full((len(texts), len(items)), np.nan)
    embeddings = model.get_input_embeddings()
    for rows in batch_plan([layout.num_tokens for layout in layouts], batch_size):
        batch = _encode(task, [texts[i] for i in rows], model)
        B, T = batch["input_ids"].shape
        with torch.inference_mode(), eval_mode(model):
            clean = task.logit_diff(model(**batch, logits_to_keep=1).logits[:, -1, :]).double().cpu()
            for j, name in enumerate(items):
                mask = torch.zeros(B, T, dtype=torch.bool)
                present = []
                for row, index in enumerate(rows):
                    layout = layouts[index]
                    item = _find_item(layout, name)
                    if item is None:
                        continue
                    pad = T - layout.num_tokens  # left padding
                    for span in _line_spans(layout, item):
                        mask[row, pad + span.token_start:pad + span.token_end] = True
                    present.append(row)
                if not present:
                    continue
                hook = embeddings.register_forward_hook(_EmbeddingAblation(mode, mask, batch["attention_mask"]))
                try:
                    ablated = task.logit_diff(model(**batch, logits_to_keep=1).logits[:, -1, :]).double().cpu()
                finally:
                    hook.remove()
                for row in present:
                    out[rows[row], j] = abs(float(ablated[row] - clean[row]))
    return out


def measure_model(model, tokenizer, statements, *, task=None, measures=DEFAULT_MEASURES, ablation="mean",
                  line_ablation="zero", line_items: Sequence[str] | None = None, batch_size: int = 8,
                  ) -> ModelMeasurements:
    """One model's per-head and per-line measurements on ``statements`` (see the module
    docstring); ``compare_models`` calls it once per model."""
    from finwidget.statement import read_statement
    from finwidget.task import EarningsTask

    texts = _texts(statements)
    metrics, want_lines = _check_measures(measures)
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    if line_ablation not in LINE_ABLATIONS:
        raise InputError(f"line_ablation must be one of {LINE_ABLATIONS}, got {line_ablation!r}")
    task = task or EarningsTask(tokenizer)
    layouts = [read_statement(t, tokenizer, task=task) for t in texts]
    items = list(line_items) if line_items is not None else _default_line_items(layouts)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    head_items = items if want_lines else []
    values, diffs = _attention_rows(model, task, texts, layouts, metrics, head_items, batch_size)
    names = metrics + [f"{LINE_ATTENTION}:{name}" for name in head_items]
    if ablation is not None:
        values = np.concatenate([values, _ablation_rows(model, task, texts, ablation, batch_size)], axis=-1)
        names += list(ABLATION_MEASURES)
    line_values = {}
    if items:
        if line_ablation is not None:
            line_values["line_dependence"] = _line_dependence(model, task, texts, layouts, items, line_ablation,
                                                              batch_size)
        if want_lines:
            per_head = values[:, :, len(metrics):len(metrics) + len(items)]  # [n, K, I]
            line_values["line_attention"] = per_head.mean(axis=1)
    return ModelMeasurements(heads=[(layer, head) for layer in range(L) for head in range(H)], head_measures=names,
                             head_values=values, line_items=items, line_values=line_values, logit_diff=diffs,
                             num_layers=L, num_heads=H)


# ---------------------------------------------------------------- matching heads
def head_profiles(a: ModelMeasurements, b: ModelMeasurements) -> tuple[np.ndarray, np.ndarray]:
    """``([K_a, n*M], [K_b, n*M])``: each head's measures over the statements, every measure
    z-scored over both models' values together (NaN kept)."""
    pooled = np.concatenate([a.head_values, b.head_values], axis=1)  # [n, K_a + K_b, M]
    mean = np.nanmean(pooled, axis=(0, 1), keepdims=True)
    std = np.nanstd(pooled, axis=(0, 1), keepdims=True)
    z = (pooled - mean) / np.where(std > 0, std, 1.0)
    z = np.transpose(z, (1, 0, 2)).reshape(pooled.shape[1], -1)  # [K, n*M]
    return z[:len(a.heads)], z[len(a.heads):]


def profile_similarity(profiles_a: np.ndarray, profiles_b: np.ndarray) -> np.ndarray:
    """``[K_a, K_b]`` Pearson correlation of every pair of head profiles (NaN entries left
    out pairwise; NaN when a profile is constant)."""
    out = np.full((profiles_a.shape[0], profiles_b.shape[0]), np.nan)
    for i, x in enumerate(profiles_a):
        for j, y in enumerate(profiles_b):
            keep = np.isfinite(x) & np.isfinite(y)
            if keep.sum() < 3:
                continue
            xs, ys = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
            norm = math.sqrt(float((xs * xs).sum()) * float((ys * ys).sum()))
            if norm > 0:
                out[i, j] = float((xs * ys).sum()) / norm
    return out


def match_heads(a: ModelMeasurements, b: ModelMeasurements, similarity: np.ndarray, by: str) -> pd.DataFrame:
    """Pairs of heads: by position (``by="position"``) or by the assignment that maximises
    the summed similarity (``"behaviour"``); unmatched heads get a row with the other side NaN."""
    from scipy.optimize import linear_sum_assignment

    if by == "position":
        pairs = list(zip(range(len(a.heads)), range(len(b.heads))))
    else:
        score = np.where(np.isfinite(similarity), similarity, -1.0)
        rows, cols = linear_sum_assignment(score, maximize=True)
        pairs = sorted(zip(rows.tolist(), cols.tolist()))
    records = [{"layer_a": a.heads[i][0], "head_a": a.heads[i][1], "layer_b": b.heads[j][0],
                "head_b": b.heads[j][1], "similarity": similarity[i, j]} for i, j in pairs]
    used_a, used_b = {i for i, _ in pairs}, {j for _, j in pairs}
    records += [{"layer_a": a.heads[i][0], "head_a": a.heads[i][1], "layer_b": math.nan, "head_b": math.nan,
                 "similarity": math.nan} for i in range(len(a.heads)) if i not in used_a]
    records += [{"layer_a": math.nan, "head_a": math.nan, "layer_b": b.heads[j][0], "head_b": b.heads[j][1],
                 "similarity": math.nan} for j in range(len(b.heads)) if j not in used_b]
    return pd.DataFrame(records, columns=["layer_a", "head_a", "layer_b", "head_b", "similarity"])


# ---------------------------------------------------------------- statistics
def _tests(a: ModelMeasurements, b: ModelMeasurements, matching: pd.DataFrame, test: str, bootstrap: int,
           confidence: float, seed: int, alpha: float) -> pd.DataFrame:
    if a.head_measures != b.head_measures:
        raise InputError("the two models were measured with different measures")
    index_a = {head: i for i, head in enumerate(a.heads)}
    index_b = {head: i for i, head in enumerate(b.heads)}
    info, first, second = [], [], []
    for pair in matching.dropna().to_dict("records"):
        i = index_a[(int(pair["layer_a"]), int(pair["head_a"]))]
        j = index_b[(int(pair["layer_b"]), int(pair["head_b"]))]
        for m, name in enumerate(a.head_measures):
            item = name.split(":", 1)[1] if name.startswith(LINE_ATTENTION + ":") else None
            info.append({"level": "head", "measure": name, "line_item": item, **{k: pair[k] for k in (
                "layer_a", "head_a", "layer_b", "head_b", "similarity")}})
            first.append(b.head_values[:, j, m])
            second.append(a.head_values[:, i, m])
    for name in LINE_MEASURES:
        if name not in a.line_values or name not in b.line_values:
            continue
        for j, item in enumerate(a.line_items):
            info.append({"level": "line", "measure": name, "line_item": item})
            first.append(b.line_values[name][:, j])
            second.append(a.line_values[name][:, j])
    if not info:
        raise InputError("nothing to compare: no matched heads and no line measures")
    result = st.paired_tests(np.stack(first, axis=1), np.stack(second, axis=1), bootstrap=bootstrap,
                             confidence=confidence, seed=seed)
    table = pd.DataFrame(info)
    for key in ("layer_a", "head_a", "layer_b", "head_b", "similarity"):
        if key not in table:
            table[key] = np.nan
    table["n"] = result["n"]
    table["mean_a"], table["mean_b"] = result["mean_second"], result["mean_first"]
    table["difference"] = result["difference"]
    for key in ("hedges_g", "g_low", "g_high", "t", "p_paired_t", "w", "p_wilcoxon"):
        table[key] = result[key]
    table["p"] = table[TESTS[test]]
    table["q"] = st.q_values(table["p"].to_numpy())
    table["significant"] = table["q"] < alpha
    columns = ["level", "measure", "line_item", "layer_a", "head_a", "layer_b", "head_b", "similarity", "n",
               "mean_a", "mean_b", "difference", "hedges_g", "g_low", "g_high", "t", "p_paired_t", "w",
               "p_wilcoxon", "p", "q", "significant"]
    return table.loc[:, columns]


def compare_models(model_a, model_b, statements, *, tokenizer_a, tokenizer_b=None, task_a=None, task_b=None,
                   measures=DEFAULT_MEASURES, ablation: str | None = "mean", line_ablation: str | None = "zero",
                   line_items: Sequence[str] | None = None, names: tuple[str, str] = ("base", "fine-tuned"),
                   match: str = "auto", test: str = "paired_t", alpha: float = 0.05, bootstrap: int = 999,
                   confidence: float = 0.95, seed: int = 0, batch_size: int = 8) -> ModelComparison:
    """The same statements through two models, head by head (see the module docstring).

    Args:
        model_a, model_b: Hugging Face causal LMs (e.g. a base model and its fine-tune, two
            sizes, two architectures with different head counts).
        statements: statement texts or demo ``Statement`` objects (n >= 2), the same for both.
        tokenizer_a, tokenizer_b: their tokenizers (``tokenizer_b`` defaults to ``tokenizer_a``).
        task_a, task_b: their ``EarningsTask`` (default: ``EarningsTask(tokenizer)``).
        measures: per-head measures: population metrics (``METRICS``) and/or
            ``"line_attention"`` (one measure per line item).
        ablation: ``"mean"``, ``"zero"`` or None (no per-head ablation effects).
        line_ablation: how a line's tokens are ablated for ``line_dependence``: ``"zero"``,
            ``"mean"`` or None (no line dependence).
        line_items: line item names for the line measures (default: those in at least half
            of the statements, as the first model's tokenizer reads them).
        names: what to call the two models in the summary and plots.
        match: ``"auto"`` (by position when both have the same layers and heads, else by
            behaviour), ``"position"`` or ``"behaviour"``.
        test: the primary paired test, ``"paired_t"`` or ``"wilcoxon"``; ``q`` is from its p.
        alpha: the q-value below which a row is significant.
        bootstrap, confidence, seed: the Hedges' g bootstrap interval.

    Returns:
        A ``ModelComparison``; differences are model b minus model a.
    """
    from finwidget.statement import read_statement

    if test not in TESTS:
        raise InputError(f"test must be one of {sorted(TESTS)}, got {test!r}")
    if match not in ("auto", "position", "behaviour"):
        raise InputError(f"match must be 'auto', 'position' or 'behaviour', got {match!r}")
    if not (isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(x, str) for x in names)):
        raise InputError(f"names must be two strings, got {names!r}")
    if not (0 < alpha < 1):
        raise InputError(f"alpha must be between 0 and 1, got {alpha!r}")
    texts = _texts(statements)
    _check_measures(measures)
    tokenizer_b = tokenizer_b if tokenizer_b is not None else tokenizer_a
    if line_items is None:
        from finwidget.task import EarningsTask

        task = task_a or EarningsTask(tokenizer_a)
        line_items = _default_line_items([read_statement(t, tokenizer_a, task=task) for t in texts])
    common = {"measures": measures, "ablation": ablation, "line_ablation": line_ablation, "line_items": line_items,
                  "batch_size": batch_size}
    a = measure_model(model_a, tokenizer_a, texts, task=task_a, **common)
    b = measure_model(model_b, tokenizer_b, texts, task=task_b, **common)
    same_geometry = (a.num_layers, a.num_heads) == (b.num_layers, b.num_heads)
    by = match if match != "auto" else "position" if same_geometry else "behaviour"
    if by == "position" and not same_geometry:
        raise InputError(f"cannot match heads by position: {names[0]} has {a.num_layers} layers x {a.num_heads} "
                         f"heads, {names[1]} {b.num_layers} x {b.num_heads}; use match='behaviour'")
    similarity = profile_similarity(*head_profiles(a, b))
    matching = match_heads(a, b, similarity, by)
    table = _tests(a, b, matching, test, bootstrap, confidence, seed, alpha)
    settings = {"names": tuple(names), "n": len(texts), "matched_by": by, "test": test, "alpha": alpha,
                "confidence": confidence, "ablation": ablation, "line_ablation": line_ablation,
                "line_items": list(line_items), "measures": list(a.head_measures),
                "geometry": {names[0]: (a.num_layers, a.num_heads), names[1]: (b.num_layers, b.num_heads)}}
    return ModelComparison(table=table, matching=matching, similarity=similarity, settings=settings,
                           measurements=(a, b))
