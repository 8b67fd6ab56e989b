"""Experiments on the demo model: datasets from files, streaming Parquet parts, resume
after an interruption, manifests, rerun from a manifest, bad folders."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from finwidget.errors import InputError
from finwidget.population import Experiment, ExperimentError, measure_statements, read_dataset
from finwidget.population import measure as measure_module

HYPOTHESIS = "Layer-1 heads attend more to financial line items when the answer is 'increase'"


@pytest.fixture(scope="module")
def demo():
    from finwidget import load_demo_model
    from finwidget.demo import make_statements

    model, tokenizer = load_demo_model()
    statements = make_statements(10, seed=77)
    frame = pd.DataFrame({"statement_text": [s.text for s in statements], "truth": [s.label for s in statements],
                          "year": [s.current_year for s in statements]})
    return model, tokenizer, frame


def experiment(dataset, **kwargs):
    options = {"text_column": "statement_text", "label_column": "truth", "batch_size": 4, "permutations": 99,
               "bootstrap": 99, "metrics": ("answer_financial", "entropy", "answer_recent_year", "answer_prior_year")}
    return Experiment(HYPOTHESIS, dataset, **{**options, **kwargs})


@pytest.fixture(scope="module")
def uninterrupted(demo, tmp_path_factory):
    model, tokenizer, frame = demo
    out = tmp_path_factory.mktemp("uninterrupted")
    return experiment(frame).run(model, tokenizer, out, progress=False).results()


def test_results_stream_one_part_per_batch_and_equal_the_in_memory_table(demo, uninterrupted, tmp_path):
    model, tokenizer, frame = demo
    result = experiment(frame).run(model, tokenizer, tmp_path, progress=False)
    parts = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert parts == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]  # 10 statements / 4
    table = result.results()
    heads = model.config.num_hidden_layers * model.config.num_attention_heads
    assert len(table) == 10 * heads and not table.duplicated(["statement", "layer", "head"]).any()
    pd.testing.assert_frame_equal(table, uninterrupted)
    in_memory = measure_statements(model, tokenizer, frame.rename(columns={"statement_text": "text",
                                                                           "truth": "label"}),
                                   batch_size=4, names=list(experiment(frame).metrics), progress=False)
    pd.testing.assert_frame_equal(table[in_memory.columns], in_memory)
    comparison = result.compare()
    assert comparison.settings["hypothesis"] == HYPOTHESIS and comparison.settings["by"] == "label"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"]["weight_sha256"] and manifest["dataset"]["rows"] == 10
    assert {"torch", "transformers", "scipy", "pyarrow"} <= set(manifest["versions"])


def test_an_interrupted_run_resumes_to_the_same_result(demo, uninterrupted, tmp_path, monkeypatch):
    model, tokenizer, frame = demo
    real = measure_module.batch_rows
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("stopped mid-run")
        return real(*args, **kwargs)

    monkeypatch.setattr(measure_module, "batch_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        experiment(frame).run(model, tokenizer, tmp_path, progress=False)
    assert len(list((tmp_path / "results").glob("part-*.parquet"))) == 1
    # a write killed half way leaves only a temporary file: removed, never read
    (tmp_path / "results" / ".part-000001.parquet.999.tmp").write_bytes(b"PAR1 half")
    monkeypatch.setattr(measure_module, "batch_rows", real)
    counted = {"n": 0}

    def counting(*args, **kwargs):
        counted["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(measure_module, "batch_rows", counting)
    with pytest.warns(UserWarning, match="interrupted"):
        result = experiment(frame).run(model, tokenizer, tmp_path, progress=False)
    assert counted["n"] == 2  # only the two missing batches ran
    pd.testing.assert_frame_equal(result.results(), uninterrupted)


def test_rerun_from_the_manifest_gives_identical_numbers(demo, uninterrupted, tmp_path):
    model, tokenizer, frame = demo
    path = tmp_path / "statements.parquet"
    frame.to_parquet(path)
    experiment(str(path)).run(model, tokenizer, tmp_path / "first", progress=False)
    again = Experiment.from_manifest(tmp_path / "first" / "manifest.json")
    second = again.run(model, tokenizer, tmp_path / "second", progress=False)
    pd.testing.assert_frame_equal(second.results(), uninterrupted)
    first_manifest = json.loads((tmp_path / "first" / "manifest.json").read_text())
    second_manifest = json.loads((tmp_path / "second" / "manifest.json").read_text())
    assert first_manifest["fingerprint"] == second_manifest["fingerprint"]
    a, b = second.compare().table, experiment(str(path)).run(model, tokenizer, tmp_path / "first",
                                                             progress=False).compare().table
    pd.testing.assert_frame_equal(a, b)


def test_rerun_with_other_weights_or_data_is_refused(demo, tmp_path):
    import torch

    model, tokenizer, frame = demo
    path = tmp_path / "statements.csv"
    frame.to_csv(path, index=False)
    experiment(str(path)).run(model, tokenizer, tmp_path / "run", progress=False)
    changed = frame.copy()
    changed.loc[0, "truth"] = "increase" if frame.loc[0, "truth"] == "decrease" else "decrease"
    with pytest.raises(ExperimentError, match="dataset differs"):
        Experiment.from_manifest(tmp_path / "run", dataset=changed)
    again = Experiment.from_manifest(tmp_path / "run")
    weight = model.model.norm.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(1.001)
        with pytest.raises(ExperimentError, match="weights differ"):
            again.run(model, tokenizer, tmp_path / "other", progress=False)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_bad_folders_give_clear_errors(demo, tmp_path):
    model, tokenizer, frame = demo
    experiment(frame).run(model, tokenizer, tmp_path, progress=False)
    # other settings into the same folder
    with pytest.raises(ExperimentError, match=r"different experiment: settings \(seed\)"):
        experiment(frame, seed=1).run(model, tokenizer, tmp_path, progress=False)
    # a part that is not complete Parquet
    part = tmp_path / "results" / "part-000001.parquet"
    good = part.read_bytes()
    part.write_bytes(good[: len(good) // 2])
    with pytest.raises(ExperimentError, match="not a readable Parquet part"):
        experiment(frame).run(model, tokenizer, tmp_path, progress=False)
    part.write_bytes(good)
    # a hand-edited manifest
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["settings"]["test"] = "mannwhitney"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ExperimentError, match="edited by hand"):
        experiment(frame).run(model, tokenizer, tmp_path, progress=False)
    manifest_path.write_text("{ cut")
    with pytest.raises(ExperimentError, match="not valid JSON"):
        Experiment.from_manifest(manifest_path)


def test_dataset_readers(demo, tmp_path):
    _, _, frame = demo
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "a.parquet")
    for name in ("a.csv", "a.jsonl", "a.parquet"):
        read = read_dataset(str(tmp_path / name), text_column="statement_text", label_column="truth")
        assert read["text"].tolist() == frame["statement_text"].tolist()
        assert read["label"].tolist() == frame["truth"].tolist()
    with pytest.raises(InputError, match="no text column 'text'.*statement_text"):
        read_dataset(frame)
    with pytest.raises(InputError, match="no label column 'y'"):
        read_dataset(frame, text_column="statement_text", label_column="y")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="is empty"):
        read_dataset(str(tmp_path / "empty.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="could not be read as parquet"):
        read_dataset(str(tmp_path / "bad.parquet"))
    with pytest.raises(InputError, match="does not exist"):
        read_dataset(str(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="empty"):
        read_dataset([])
