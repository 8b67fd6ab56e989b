"""Experiments over many statements that stream to Parquet, resume, and rerun exactly.

``Experiment(hypothesis, dataset, metrics, grouping, test, seed)`` measures every
statement (length-sorted, left-padded batches under capture) and writes one Parquet part
per batch into ``<output>/results/`` as it goes: each part is written to a temporary
file and renamed into place, so a part on disk is always complete. ``manifest.json``
beside it records the settings, the seed, the model (name, class, sha256 of its
weights), the dataset's sha256, the batch plan and library versions; every part carries
the manifest's fingerprint in its Parquet metadata.

- Interrupted? ``run`` again with the same output: finished parts are kept (checked),
  a temporary file left by a killed write is removed, the remaining batches run. The
  result equals an uninterrupted run, with no row missing or doubled.
- Rerun: ``Experiment.from_manifest(path)`` rebuilds the experiment (the dataset from
  its file, or pass it) and checks the dataset and model hashes, so ``run`` into a new
  folder gives identical numbers.
- Scale out: under ``accelerate launch --num_processes N``, process ``i`` runs batches
  ``i, i + N, ...`` into the same folder (one dataset); the main process writes the
  manifest first.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finwidget.errors import FinwidgetError, InputError
from finwidget.population import comparison as cmp
from finwidget.population.datasets import dataset_hash, read_dataset
from finwidget.population.measure import batch_plan, iterate_batches, prompt_lengths
from finwidget.population.metrics import METRICS

MANIFEST = "manifest.json"
RESULTS = "results"
FORMAT = 1
_FINGERPRINT_KEYS = ("format", "hypothesis", "settings", "model", "dataset", "plan_sha256", "num_batches")


class ExperimentError(FinwidgetError, RuntimeError):
    """An experiment folder that cannot be used as it is (inconsistent manifest, corrupt part)."""


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def weight_hash(model) -> str:
    """sha256 over the model's parameters and buffers (names, dtypes, shapes, bytes), in name order."""
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        data = tensor.contiguous().cpu()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("finwidget", "torch", "transformers", "accelerate", "numpy", "scipy", "pandas", "pyarrow"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def distributed_state():
    """accelerate's ``PartialState`` when launched with several processes, else None.

    Without a GPU the processes talk over gloo (``cpu=True``), so the same command runs
    on CPU-only machines."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        from accelerate import PartialState

        return PartialState(cpu=not torch.cuda.is_available())
    return None


def _distributed():
    """``(process index, number of processes, state)``."""
    state = distributed_state()
    if state is None:
        return 0, 1, None
    return state.process_index, state.num_processes, state


@dataclass
class Experiment:
    """A hypothesis tested over a dataset of statements.

    Args:
        hypothesis: the hypothesis in words (kept in the manifest and the summary).
        dataset: anything ``read_dataset`` takes (list, DataFrame, CSV / JSONL / Parquet path).
        metrics: metric names (default all of ``METRICS``).
        grouping: how ``compare`` groups statements (``"label"``, ``"predicted"``,
            ``"correct"``, ``"confidence"`` or a dataset column), or a ready-made contrast
            (``"recent_vs_prior_year"``, ``"large_vs_small_numbers"``,
            ``"financial_vs_other_words"``, ``"layer_band"``, ``"correlation"``).
        test: the primary test of ``compare``.
        seed: seeds permutation and bootstrap resampling.
        batch_size: statements per forward pass.
        text_column, label_column: columns of the dataset.
        groups, threshold, permutations, bootstrap: passed to the comparison.
    """

    hypothesis: str
    dataset: object
    metrics: tuple[str, ...] | None = None
    grouping: str = "label"
    test: str = "welch"
    seed: int = 0
    batch_size: int = 8
    text_column: str = "text"
    label_column: str | None = "label"
    groups: tuple | None = None
    threshold: float | None = None
    permutations: int = 999
    bootstrap: int = 999

    def __post_init__(self):
        if not isinstance(self.hypothesis, str) or not self.hypothesis.strip():
            raise InputError("state the hypothesis in words (a non-empty string)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {self.batch_size!r}")
        self.metrics = tuple(METRICS if self.metrics is None else self.metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise InputError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
        self.frame = read_dataset(self.dataset, self.text_column, self.label_column)
        self._source = str(Path(self.dataset).resolve()) if isinstance(self.dataset, (str, Path)) else None

    # ------------------------------------------------------------------ manifest
    def settings(self) -> dict:
        return {"metrics": list(self.metrics), "grouping": self.grouping, "test": self.test, "seed": self.seed,
                "batch_size": self.batch_size, "text_column": self.text_column, "label_column": self.label_column,
                "groups": None if self.groups is None else list(self.groups), "threshold": self.threshold,
                "permutations": self.permutations, "bootstrap": self.bootstrap}

    def manifest(self, model, tokenizer, plan) -> dict:
        config = model.config
        manifest = {
            "format": FORMAT, "hypothesis": self.hypothesis, "settings": self.settings(),
            "model": {"name": getattr(config, "_name_or_path", "") or "", "class": type(model).__name__,
                      "revision": getattr(config, "_commit_hash", None), "weight_sha256": weight_hash(model),
                      "tokenizer": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__},
            "dataset": {"source": self._source, "rows": len(self.frame), "sha256": dataset_hash(self.frame)},
            "plan_sha256": _sha256(_canonical(plan)), "num_batches": len(plan),
            "versions": library_versions(),
        }
        manifest["fingerprint"] = _sha256(_canonical({k: manifest[k] for k in _FINGERPRINT_KEYS}))
        return manifest

    @classmethod
    def from_manifest(cls, path, dataset=None) -> Experiment:
        """The experiment a manifest describes (``dataset`` default: the file it names)."""
        manifest = read_manifest(path)
        source = dataset if dataset is not None else manifest["dataset"]["source"]
        if source is None:
            raise InputError("the manifest's dataset was not a file: pass dataset= (the same statements)")
        s = manifest["settings"]
        experiment = cls(manifest["hypothesis"], source, metrics=tuple(s["metrics"]), grouping=s["grouping"],
                         test=s["test"], seed=s["seed"], batch_size=s["batch_size"], text_column=s["text_column"],
                         label_column=s["label_column"], groups=None if s["groups"] is None else tuple(s["groups"]),
                         threshold=s["threshold"], permutations=s["permutations"], bootstrap=s["bootstrap"])
        found = dataset_hash(experiment.frame)
        if found != manifest["dataset"]["sha256"]:
            raise ExperimentError(f"the dataset differs from the manifest's (sha256 {found[:12]}... vs "
                                  f"{manifest['dataset']['sha256'][:12]}...): not the same statements")
        experiment._expected_weights = manifest["model"]["weight_sha256"]
        return experiment

    # ------------------------------------------------------------------ running
    def run(self, model, tokenizer, output, *, task=None, progress: bool = True) -> ExperimentResult:
        """Measure every statement not already in ``output``; returns the ``ExperimentResult``."""
        from finwidget.task import EarningsTask

        task = task or EarningsTask(tokenizer)
        output = Path(output)
        parts = output / RESULTS
        plan = batch_plan(prompt_lengths(tokenizer, self.frame["text"].tolist(), task), self.batch_size)
        manifest = self.manifest(model, tokenizer, plan)
        expected = getattr(self, "_expected_weights", None)
        if expected is not None and expected != manifest["model"]["weight_sha256"]:
            raise ExperimentError("the model's weights differ from the manifest's (sha256 "
                                  f"{manifest['model']['weight_sha256'][:12]}... vs {expected[:12]}...)")
        rank, world, state = _distributed()
        if rank == 0:
            parts.mkdir(parents=True, exist_ok=True)
            _write_or_check_manifest(output / MANIFEST, manifest)
        if state is not None:
            state.wait_for_everyone()
        done = _finished_parts(parts, manifest, plan, len(self.metrics), clean=True, rank=rank)
        mine = {i for i in range(len(plan)) if i % world == rank}
        skip = set(done) | (set(range(len(plan))) - mine)
        for index, rows in iterate_batches(model, tokenizer, self.frame, self.batch_size, task, list(self.metrics),
                                           plan=plan, skip=skip, progress=progress and rank == 0):
            _write_part(parts, index, rows, manifest["fingerprint"], process=f"{rank}/{world}")
        if state is not None:
            state.wait_for_everyone()
        return ExperimentResult(output, self)


def _write_or_check_manifest(path: Path, manifest: dict) -> None:
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)
        return
    old = read_manifest(path)
    differing = [k for k in _FINGERPRINT_KEYS if _canonical(old.get(k)) != _canonical(manifest[k])]
    if differing:
        detail = []
        for key in differing:
            if isinstance(manifest[key], dict) and isinstance(old.get(key), dict):
                sub = sorted(k for k in set(manifest[key]) | set(old[key])
                             if _canonical(manifest[key].get(k)) != _canonical(old[key].get(k)))
                detail.append(f"{key} ({', '.join(sub)})")
            else:
                detail.append(key)
        raise ExperimentError(f"{path} belongs to a different experiment: {'; '.join(detail)} differ. "
                              "Use a new output folder (or the same settings, model and dataset to resume)")
    if old.get("versions") != manifest["versions"]:
        warnings.warn(f"resuming {path.parent} with other library versions than it started with "
                      f"({old.get('versions')} -> {manifest['versions']}); numbers may differ in the last digits",
                      stacklevel=3)


def read_manifest(path) -> dict:
    """A manifest, checked: valid JSON, every field present, fingerprint matching its content."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.exists():
        raise InputError(f"no manifest at {path}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExperimentError(f"{path} is not valid JSON ({exc}); it was edited or cut short") from None
    missing = [k for k in (*_FINGERPRINT_KEYS, "fingerprint") if k not in manifest]
    if missing:
        raise ExperimentError(f"{path} lacks {missing}: not a finwidget experiment manifest, or edited")
    if manifest["format"] != FORMAT:
        raise ExperimentError(f"{path} has format {manifest['format']!r}; this finwidget reads format {FORMAT}")
    computed = _sha256(_canonical({k: manifest[k] for k in _FINGERPRINT_KEYS}))
    if computed != manifest["fingerprint"]:
        raise ExperimentError(f"{path} is inconsistent: its content does not match its fingerprint (it was edited "
                              "by hand). Restore it, or start the experiment in a new folder")
    return manifest


def _part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def _write_part(parts: Path, index: int, rows: pd.DataFrame, fingerprint: str, process: str = "0/1") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(rows, preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"finwidget.fingerprint": fingerprint.encode(),
            b"finwidget.batch": str(index).encode(), b"finwidget.process": process.encode()}
    table = table.replace_schema_metadata(meta)
    final = parts / _part_name(index)
    tmp = parts / f".{final.name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def _finished_parts(parts: Path, manifest: dict, plan, num_metrics: int, clean: bool = False,
                    rank: int = 0) -> list[int]:
    """Batch indices whose part is on disk and complete; raises on a part that is not."""
    import pyarrow.parquet as pq

    if not parts.exists():
        return []
    if clean and rank == 0:
        for stale in sorted(parts.glob(".part-*.tmp")):
            warnings.warn(f"removing {stale.name}: a part whose write was interrupted (never read)", stacklevel=3)
            stale.unlink(missing_ok=True)
    done = []
    for path in sorted(parts.glob("part-*.parquet")):
        try:
            index = int(path.stem.split("-")[1])
            meta = pq.read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable part is corrupt to the user
            raise ExperimentError(f"{path} is not a readable Parquet part ({exc}); it was cut short or edited. "
                                  "Delete it and run again to redo that batch") from None
        tags = meta.schema.to_arrow_schema().metadata or {}
        if tags.get(b"finwidget.fingerprint", b"").decode() != manifest["fingerprint"]:
            raise ExperimentError(f"{path} was written by a different experiment (fingerprint differs from "
                                  f"{MANIFEST}); do not mix experiments in one folder")
        if not 0 <= index < len(plan) or tags.get(b"finwidget.batch", b"").decode() != str(index):
            raise ExperimentError(f"{path}: its batch index does not match the plan of {len(plan)} batches")
        if meta.num_rows % len(plan[index]) != 0:
            raise ExperimentError(f"{path} holds {meta.num_rows} rows, not a whole number per statement of its batch")
        done.append(index)
    return done


class ExperimentResult:
    """The results folder of an ``Experiment``: ``results()`` reads the Parquet dataset,
    ``compare()`` runs the experiment's test, ``missing()`` lists batches not yet done."""

    def __init__(self, output, experiment: Experiment | None = None):
        self.output = Path(output)
        self.manifest = read_manifest(self.output)
        self.experiment = experiment

    def missing(self) -> list[int]:
        manifest = self.manifest
        plan_len = manifest["num_batches"]
        parts = self.output / RESULTS
        have = {int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")}
        return sorted(set(range(plan_len)) - have)

    def results(self) -> pd.DataFrame:
        """The metric table, one row per (statement, layer, head), sorted."""
        missing = self.missing()
        if missing:
            raise ExperimentError(f"{len(missing)} of {self.manifest['num_batches']} batches are not done yet "
                                  f"(first: {missing[:5]}); run the experiment again to finish")
        import pyarrow.parquet as pq

        frames = []
        for path in sorted((self.output / RESULTS).glob("part-*.parquet")):
            try:
                frames.append(pq.read_table(path).to_pandas())
            except Exception as exc:  # noqa: BLE001
                raise ExperimentError(f"{path} cannot be read ({exc}); delete it and run again") from None
        table = pd.concat(frames, ignore_index=True).sort_values(["statement", "layer", "head"])
        if table.duplicated(["statement", "layer", "head"]).any():
            raise ExperimentError("the results hold a (statement, layer, head) twice; the folder mixes runs")
        if table["statement"].nunique() != self.manifest["dataset"]["rows"]:
            raise ExperimentError(f"the results cover {table['statement'].nunique()} statements, the dataset has "
                                  f"{self.manifest['dataset']['rows']}")
        return table.reset_index(drop=True)

    def merge(self, path) -> Path:
        """Write the whole metric table as one Parquet file."""
        path = Path(path)
        self.results().to_parquet(path, index=False)
        return path

    def compare(self) -> cmp.Comparison:
        """The experiment's comparison, as its settings say."""
        s = self.manifest["settings"]
        table = self.results()
        grouping = s["grouping"]
        options = {"bootstrap": s["bootstrap"], "seed": s["seed"]}
        if grouping in ("recent_vs_prior_year", "large_vs_small_numbers", "financial_vs_other_words"):
            result = getattr(cmp, grouping)(table, **options)
        elif grouping == "layer_band":
            result = cmp.layer_band(table, **options)
        elif grouping == "correlation":
            result = cmp.correlate(table, s["metrics"], test=s["test"] if s["test"] in ("pearson", "spearman")
                                   else "spearman")
        else:
            result = cmp.compare_groups(table, grouping, s["groups"], s["metrics"], threshold=s["threshold"],
                                        test=s["test"], permutations=s["permutations"], **options)
        result.settings["hypothesis"] = self.manifest["hypothesis"]
        return result
