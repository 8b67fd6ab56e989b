"""The same experiment under ``accelerate launch --num_processes 2`` on CPU: each process
runs its shard of batches into one folder, and the merged results equal one process's.

accelerate's ``--cpu`` with several processes starts only one here (its multi-CPU path
wants MPI), so the test uses the distributed launcher (``--multi_gpu``, i.e. torchrun)
with no GPU visible: two processes on CPU with the gloo backend, the launcher users run
on GPUs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from finwidget.population import ExperimentResult

ARGS = ["--model", "demo", "--batch-size", "2", "--no-progress", "--hypothesis", "sharding changes nothing",
        "--metrics", "answer_financial", "entropy", "answer_recent_year"]


def accelerate_command() -> list[str]:
    exe = Path(sys.executable).with_name("accelerate")
    if exe.exists():
        return [str(exe)]
    if shutil.which("accelerate"):
        return [shutil.which("accelerate")]
    # accelerate is a dependency of finwidget, so a missing command is a broken install: fail, never skip
    pytest.fail("the accelerate command line is not installed next to this Python; pip install -e '.[test]'")


def test_two_processes_merge_to_the_single_process_result(tmp_path):
    from finwidget.demo import make_statements

    statements = make_statements(10, seed=5)
    data = tmp_path / "statements.csv"
    pd.DataFrame({"text": [s.text for s in statements], "label": [s.label for s in statements]}).to_csv(data,
                                                                                                        index=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    root = Path(__file__).resolve().parents[1]
    single = subprocess.run([sys.executable, "-m", "finwidget.population.launch", *ARGS, "--dataset", str(data),
                             "--output", str(tmp_path / "single")], cwd=root, env=env, capture_output=True, check=False,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = subprocess.run([*accelerate_command(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                              "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
                              "finwidget.population.launch", *ARGS, "--dataset", str(data), "--output",
                              str(tmp_path / "sharded")], cwd=root, env=env, capture_output=True, text=True,
                             timeout=600, check=False)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    writers = {pq.read_metadata(p).schema.to_arrow_schema().metadata[b"finwidget.process"].decode()
               for p in (tmp_path / "sharded" / "results").glob("part-*.parquet")}
    assert writers == {"0/2", "1/2"}  # both processes wrote their shard
    merged = ExperimentResult(tmp_path / "sharded").results()
    alone = ExperimentResult(tmp_path / "single").results()
    pd.testing.assert_frame_equal(merged, alone)
    assert merged["statement"].nunique() == 10
