"""``compare_models`` on small random models: matching by behaviour across geometries, a
model against itself, the line attention is the grid's measure, bad input, the plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import single_thread

from finwidget.demo import make_statements
from finwidget.errors import InputError

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def _random_qwen2(tokenizer, layers, heads, kv_heads, seed):
    from finwidget.demo.train import TrainConfig, build_model

    config = TrainConfig(layers=layers, heads=heads, kv_heads=kv_heads, hidden=16 * heads, ffn=32 * heads, seed=seed)
    return build_model(config, tokenizer).eval()


@pytest.fixture(scope="module")
def setup():
    from transformers import AutoTokenizer

    from finwidget.demo import MODEL_DIR

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    small = _random_qwen2(tokenizer, 2, 4, 2, seed=1)
    large = _random_qwen2(tokenizer, 3, 6, 3, seed=2)
    statements = make_statements(10, 4711)
    return tokenizer, small, large, statements


@pytest.fixture(scope="module")
def across(setup):
    from finwidget import compare_models

    tokenizer, small, large, statements = setup
    return compare_models(small, large, statements, tokenizer_a=tokenizer, names=("2x4", "3x6"), bootstrap=99)


def test_different_geometries_are_matched_by_behaviour(across):
    assert across.settings["matched_by"] == "behaviour"
    assert across.similarity.shape == (8, 18)
    pairs = across.matching.dropna()
    assert len(pairs) == 8  # every head of the smaller model, each to a different head of the larger
    assert len(set(zip(pairs["layer_b"], pairs["head_b"]))) == 8
    assert len(across.matching) == 8 + 10  # the 10 unmatched heads of the larger model are listed
    # the matching is the assignment with the largest summed similarity: no other beats it
    sim = np.nan_to_num(across.similarity, nan=-1.0)
    heads_b = [(layer, head) for layer in range(3) for head in range(6)]
    chosen = sum(sim[int(r.layer_a) * 4 + int(r.head_a), heads_b.index((int(r.layer_b), int(r.head_b)))]
                 for r in pairs.itertuples())
    rng = np.random.default_rng(0)
    for _ in range(500):
        columns = rng.choice(18, size=8, replace=False)
        assert sim[np.arange(8), columns].sum() <= chosen + 1e-12
    assert np.allclose(pairs["similarity"], [sim[int(r.layer_a) * 4 + int(r.head_a),
                                                 heads_b.index((int(r.layer_b), int(r.head_b)))]
                                             for r in pairs.itertuples()])


def test_table_holds_every_test_with_q_over_all(across):
    from finwidget.population.statistics import q_values

    table = across.table
    heads = table[table["level"] == "head"]
    assert len(heads) == 8 * len(across.settings["measures"])
    assert set(table.loc[table["level"] == "line", "measure"]) == {"line_dependence", "line_attention"}
    assert np.allclose(table["q"], q_values(table["p"].to_numpy()), equal_nan=True)
    assert (table["significant"] == (table["q"] < 0.05)).all()
    assert (table["n"] == 10).all()
    first = heads.iloc[0]
    a, b = across.measurements
    i = int(first["layer_a"]) * 4 + int(first["head_a"])
    j = int(first["layer_b"]) * 6 + int(first["head_b"])
    m = a.head_measures.index(first["measure"])
    assert first["mean_a"] == pytest.approx(np.nanmean(a.head_values[:, i, m]))
    assert first["mean_b"] == pytest.approx(np.nanmean(b.head_values[:, j, m]))


def test_a_model_against_itself_matches_every_head_to_itself(setup):
    from finwidget import compare_models
    from finwidget.population.statistics import StatisticsWarning

    tokenizer, _, large, statements = setup
    with pytest.warns(StatisticsWarning, match="identical"):
        same = compare_models(large, large, statements, tokenizer_a=tokenizer, match="behaviour", bootstrap=99)
    pairs = same.matching
    assert (pairs["layer_a"] == pairs["layer_b"]).all() and (pairs["head_a"] == pairs["head_b"]).all()
    assert len(pairs) == 18
    # identical profiles: the correlation is 1 up to float64 rounding of the same numbers
    assert np.allclose(pairs["similarity"], 1.0, rtol=0, atol=1e-12)
    assert not same.table["significant"].any()
    assert (same.table["difference"].fillna(0) == 0).all()
    assert "no significant difference" in same.summary()


def test_line_attention_is_the_grids_attention_to_selection(setup):
    """Per head, ``line_attention:<item>`` is ``HEAD_MEASURES``' attention_to_selection with the
    line's spans selected (same forward pass; the sums differ only in float32 rounding: at most
    one rounding per added term, <= tokens x 2^-23 on masses <= 1)."""
    from finwidget import EarningsTask, capture_attention, read_statement
    from finwidget.analysis.metrics import head_metric_table
    from finwidget.population.model_comparison import measure_model

    tokenizer, small, _, statements = setup
    texts = [s.text for s in statements[:2]]
    measured = measure_model(small, tokenizer, texts, measures=("line_attention",), ablation=None,
                             line_ablation=None, batch_size=1)
    task = EarningsTask(tokenizer)
    for index, text in enumerate(texts):
        layout = read_statement(text, tokenizer, task=task)
        with capture_attention(small) as cap, torch.inference_mode():
            small(**task.encode([text]))
        for m, name in enumerate(measured.head_measures):
            item = layout.line_item(name.split(":", 1)[1])
            spans = [s.index for s in layout.spans if s.line == item.line and s.kind != "break"]
            assert spans == list(range(spans[0], spans[-1] + 1))  # a line is a contiguous span range
            grid = head_metric_table(cap, layout, ["attention_to_selection"], selection=(spans[0], spans[-1] + 1))
            tokens = layout.spans[spans[-1]].token_end - layout.spans[spans[0]].token_start
            np.testing.assert_allclose(measured.head_values[index, :, m], grid["attention_to_selection"],
                                       rtol=0, atol=tokens * 2.0 ** -23)
        cap.release()


def test_bad_input_is_refused(setup):
    from finwidget import compare_models

    tokenizer, small, large, statements = setup
    with pytest.raises(InputError, match="at least two statements"):
        compare_models(small, large, statements[:1], tokenizer_a=tokenizer)
    with pytest.raises(InputError, match="unknown measure"):
        compare_models(small, large, statements, tokenizer_a=tokenizer, measures=("attention_to_moon",))
    with pytest.raises(InputError, match="by position"):
        compare_models(small, large, statements, tokenizer_a=tokenizer, match="position")
    with pytest.raises(InputError, match="ablation must be one of"):
        compare_models(small, large, statements, tokenizer_a=tokenizer, ablation="half")
    with pytest.raises(InputError, match="test must be one of"):
        compare_models(small, large, statements, tokenizer_a=tokenizer, test="anova")
    # nothing was left installed on the models
    for model in (small, large):
        assert not model.get_input_embeddings()._forward_hooks
        assert all(not layer.self_attn.o_proj._forward_pre_hooks for layer in model.model.layers)


def test_plot_marks_significant_cells(across):
    from finwidget.widgets.population_plots import plot_model_comparison

    measure = "line_attention:Net income"
    box = plot_model_comparison(across, measure=measure)
    rows = across.head_rows(measure)
    grid = box.heatmap.marks[0]
    assert np.asarray(grid.color).shape == (2, 4)
    assert len(box.heatmap.marks[1].x) == int(rows["significant"].sum())
    assert box.lines is not None and len(box.lines.marks[0].x) == len(across.lines())
    with pytest.raises(InputError, match="ModelComparison"):
        plot_model_comparison(pd.DataFrame())


def test_wilcoxon_as_primary_test(setup, across):
    from finwidget import compare_models

    assert across.settings["test"] == "paired_t"
    assert across.table["p"].equals(across.table["p_paired_t"])
    tokenizer, small, large, statements = setup
    ranked = compare_models(small, large, statements, tokenizer_a=tokenizer, measures=("entropy",), ablation=None,
                            line_ablation=None, test="wilcoxon", bootstrap=0)
    assert ranked.table["p"].equals(ranked.table["p_wilcoxon"])
    assert set(ranked.table["measure"]) == {"entropy"}
    assert ranked.table["p_wilcoxon"].notna().all()


def test_line_ablation_modes_and_models_left_as_they_were(setup):
    """Both line ablations give finite, non-negative dependences on every line; afterwards no
    hook is left and the model predicts exactly as before (same forward pass)."""
    from finwidget import predict
    from finwidget.population.model_comparison import measure_model

    tokenizer, small, _, statements = setup
    texts = [s.text for s in statements[:3]]
    before = [p.logit_diff for p in predict(small, tokenizer, texts)]
    small.train()  # a model left in training mode comes back in training mode
    for mode in ("zero", "mean"):
        measured = measure_model(small, tokenizer, texts, measures=("entropy",), ablation=None, line_ablation=mode)
        dependence = measured.line_values["line_dependence"]
        assert dependence.shape == (3, 9) and np.isfinite(dependence).all() and (dependence >= 0).all()
        assert "line_attention" not in measured.line_values  # only with the "line_attention" measure
    assert small.training
    small.eval()
    assert not small.get_input_embeddings()._forward_hooks
    assert [p.logit_diff for p in predict(small, tokenizer, texts)] == before
