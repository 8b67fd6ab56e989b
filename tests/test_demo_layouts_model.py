"""Truth tests of the layouts demo model (``load_demo_model(variant="layouts")``).

Its rule is the shipped demo model's (increase iff net income and operating cash flow both
rose); it reads statements written as lines, markdown tables and aligned text tables. The
tests check the accuracy bar on every layout and that the heads its model card names
matter in every layout, measured here (ablation with finwidget's ``CachedRun``).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import single_thread

from finwidget.demo import LAYOUTS, LAYOUTS_MODEL_DIR, MODEL_DIR, make_statements
from finwidget.demo.evaluate import HELD_OUT_SEED
from finwidget.demo.layout_heads import ablation_by_layout
from finwidget.demo.train import VALIDATION_SEED, TrainConfig, training_seed
from finwidget.errors import ModelLoadError
from finwidget.task import EarningsTask

FRESH_SEED = 515_151  # used nowhere else: not in training, validation, the tokenizer corpus or the card

# Accuracy bar, per layout: at most MAX_ERRORS wrong answers out of N_PER_LAYOUT statements.
# Binomial reasoning: with 6 errors in 600 the one-sided 95% Clopper-Pearson upper bound of
# the error rate is 1.96%, so passing shows a true accuracy above 98% (the bar) at
# 95% confidence; a model exactly at 98% would pass with probability 4.4%
# (P[Binomial(600, 0.02) <= 6]), and one at 99.5% (the weakest layout in the model card,
# aligned, measured on 1,000 statements) with probability 96.7%.
N_PER_LAYOUT = 600
MAX_ERRORS = 6

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


@pytest.fixture(scope="module")
def layouts_model():
    from finwidget.demo import load_demo_model

    return load_demo_model(variant="layouts")


def test_default_variant_is_still_the_shipped_model_and_variants_are_checked():
    from finwidget.demo import load_demo_model

    model, _ = load_demo_model()
    assert model.name_or_path == str(MODEL_DIR)
    layouts, _ = load_demo_model(variant="layouts")
    assert layouts.name_or_path == str(LAYOUTS_MODEL_DIR)
    with pytest.raises(ModelLoadError, match="unknown demo model variant 'tables'"):
        load_demo_model(variant="tables")


def test_same_small_shape_as_the_default_model(layouts_model):
    model, tokenizer = layouts_model
    default = json.loads((MODEL_DIR / "config.json").read_text())
    config = model.config
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                "intermediate_size"):
        assert getattr(config, key) == default[key], key
    assert config.vocab_size == len(tokenizer)
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_tokenizer_is_rebuilt_by_its_command_and_encodes_tables_compactly(layouts_model):
    from finwidget.demo.tokenizer import build_tokenizer, training_corpus

    _, tokenizer = layouts_model
    rebuilt = build_tokenizer(training_corpus(layout="mixed"))
    assert rebuilt.get_vocab() == tokenizer.get_vocab()
    task = EarningsTask(tokenizer)
    assert task.answers_are_single_tokens
    for statement in make_statements(20, FRESH_SEED, layout="aligned"):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(statement.text)["input_ids"])
        assert all(len(t) == 1 for t in tokens if t.strip("Ġ").isdigit())  # one token per digit
        assert max(len(t) for t in tokens if set(t) == {"Ġ"}) >= 8  # space runs are merged, not byte by byte
    same_statements = {layout: make_statements(20, FRESH_SEED, layout=layout) for layout in LAYOUTS}
    lengths = {layout: sum(len(tokenizer(s.text)["input_ids"]) for s in statements)
               for layout, statements in same_statements.items()}
    assert max(lengths.values()) <= 1.2 * lengths["line"], lengths


def test_fresh_seed_is_not_a_training_seed():
    log = json.loads((LAYOUTS_MODEL_DIR / "training_log.json").read_text())
    seeds_used = {training_seed(log["config"]["seed"], step) for step in range(log["config"]["steps"])}
    assert FRESH_SEED not in seeds_used | {VALIDATION_SEED, HELD_OUT_SEED}


def test_training_log_names_the_command_settings():
    log = json.loads((LAYOUTS_MODEL_DIR / "training_log.json").read_text())
    config = TrainConfig(**log["config"])  # every logged setting is one the command takes
    assert (config.layout, config.init_from, config.layers, config.hidden) == ("mixed", "finwidget/demo/model", 2, 128)
    assert log["validation"][-1]["accuracy"] == 1.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_held_out_accuracy_on_every_layout(layouts_model, layout):
    from finwidget.demo.evaluate import evaluate

    model, tokenizer = layouts_model
    result = evaluate(model, tokenizer, n=N_PER_LAYOUT, seed=FRESH_SEED, layout=layout)
    errors = round((1 - result.accuracy) * N_PER_LAYOUT)
    assert errors <= MAX_ERRORS, result
    assert result.accuracy > max(result.single_item_baselines.values()) + 0.1  # it reads both rule items


# The heads the model card names, and what it measured with them mean-ablated (200
# statements per layout, seed 424242): L0H1 alone 0.47-0.48 (every statement answered
# "increase"), L0H2 alone 0.80-0.83, every other head alone >= 0.975, L1H0 + L1H1 together
# 0.47-0.50, in each of the three layouts.
HEAD_TEST_N = 150  # fresh statements per layout here


@pytest.fixture(scope="module")
def ablations(layouts_model):
    model, tokenizer = layouts_model
    single = [[(layer, head)] for layer in range(2) for head in range(4)]
    sets = single + [[(0, 1), (0, 2), (1, 0)], [(1, 0), (1, 1)]]
    return ablation_by_layout(model, tokenizer, n=HEAD_TEST_N, seed=FRESH_SEED, reference_n=64,
                              layouts=LAYOUTS, modes=("mean",), head_sets=sets)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_named_heads_matter_in_every_layout(ablations, layout):
    """Bars with room for sampling noise on 150 statements (standard error of an accuracy
    near 0.8 is 0.033, near 0.975 it is 0.013): L0H1 alone leaves at most 0.65 (answering one
    label for all gives about 0.5), L0H2 alone at most 0.92 (card: 0.80-0.83), the card's
    top three together and the layer-1 pair L1H0 + L1H1 together at most 0.65 (card: 0.47-0.50);
    the six other heads one at a time keep at least 0.94 (card: >= 0.975)."""
    rows = ablations[ablations["layout"] == layout].set_index("heads")
    assert (rows["clean_accuracy"] >= 0.97).all()
    assert rows.loc["L0H1", "accuracy"] <= 0.65, rows
    assert rows.loc["L0H2", "accuracy"] <= 0.92, rows
    assert rows.loc["L0H1+L0H2+L1H0", "accuracy"] <= 0.65, rows
    assert rows.loc["L1H0+L1H1", "accuracy"] <= 0.65, rows
    others = rows.drop(index=["L0H1", "L0H2", "L0H1+L0H2+L1H0", "L1H0+L1H1"])
    assert len(others) == 6 and (others["accuracy"] >= 0.94).all(), others


def test_the_same_heads_rank_first_in_every_layout(ablations):
    """"Do the same heads read net income in every layout?": the two heads with the largest
    mean |change| of the logit difference are L0H1 and L0H2 in each layout."""
    singles = ablations[~ablations["heads"].str.contains(r"\+")]
    for layout in LAYOUTS:
        ranked = singles[singles["layout"] == layout].sort_values("mean_abs_change", ascending=False)
        assert list(ranked["heads"][:2]) == ["L0H1", "L0H2"], ranked


def test_warm_start_copies_weights_by_token_string():
    from transformers import AutoTokenizer

    from finwidget.demo import load_demo_model
    from finwidget.demo.train import build_model, warm_start
    from finwidget.errors import InputError

    source, source_tokenizer = load_demo_model()
    tokenizer = AutoTokenizer.from_pretrained(LAYOUTS_MODEL_DIR)
    model = build_model(TrainConfig(), tokenizer)
    fresh = build_model(TrainConfig(), tokenizer)  # same seed: the initialisation warm_start starts from
    counts = warm_start(model, tokenizer, MODEL_DIR)
    shared = set(source_tokenizer.get_vocab()) & set(tokenizer.get_vocab())
    assert counts == {"copied_tokens": len(shared), "new_tokens": len(tokenizer) - len(shared)}
    assert counts["new_tokens"] > 0
    embedding, source_embedding = model.model.embed_tokens.weight, source.model.embed_tokens.weight
    for token in shared:
        assert torch.equal(embedding[tokenizer.convert_tokens_to_ids(token)],
                           source_embedding[source_tokenizer.convert_tokens_to_ids(token)]), token
    for token in set(tokenizer.get_vocab()) - shared:
        index = tokenizer.convert_tokens_to_ids(token)
        assert torch.equal(embedding[index], fresh.model.embed_tokens.weight[index]), token
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: the LM head follows
    source_weights = source.state_dict()
    for name, weight in model.state_dict().items():
        if "embed_tokens" not in name and name != "lm_head.weight":
            assert torch.equal(weight, source_weights[name]), name
    with pytest.raises(InputError, match="does not fit"):
        warm_start(build_model(TrainConfig(hidden=64), tokenizer), tokenizer, MODEL_DIR)
