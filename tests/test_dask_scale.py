"""The dask scale benchmark: the Parquet parts generator, the per-process monitor and the harness.

No timing assertions: the machine is shared. The end-to-end run needs the dask engine.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import generate_data
from benchmarks.dask_scale import (
    GB,
    MB,
    EngineRun,
    ProcessPeak,
    SizeResult,
    TreeMeasurement,
    csv_records,
    local_not_run_note,
    measure_tree,
    parts_for,
    process_role,
    representative,
    single_file_for,
    table_rows,
)
from benchmarks.generate_data import write_dataset, write_parquet_parts
from benchmarks.scale import TreeSampler
from pystock_training.data import load_dataset
from tests.conftest import PROJECT_ROOT, poll_until


def part_rows_of(directory: Path) -> list[int]:
    return [pq.ParquetFile(part).metadata.num_rows for part in sorted(directory.iterdir())]


@pytest.mark.parametrize(
    ("n_rows", "part_rows", "chunk_rows"),
    [(1, 1, 1), (15, 7, 3), (1_000, 300, 128), (1_000, 1_000, 999), (1_000, 250, 1_000)],
)
def test_parts_hold_the_csv_rows_in_order(
    tmp_path: Path, n_rows: int, part_rows: int, chunk_rows: int
) -> None:
    csv_rows = pd.read_csv(write_dataset(tmp_path / "walk.csv", n_rows, seed=4), header=None).to_numpy()
    parts = write_parquet_parts(
        tmp_path / "parts", n_rows, seed=4, part_rows=part_rows, chunk_rows=chunk_rows
    )
    expected_sizes = [min(part_rows, n_rows - start) for start in range(0, n_rows, part_rows)]
    assert part_rows_of(parts) == expected_sizes
    assert [path.name for path in sorted(parts.iterdir())] == [
        f"part-{index:05d}.parquet" for index in range(len(expected_sizes))
    ]
    table = pq.read_table(parts)
    assert table.schema == pa.schema([(f"f{i}", pa.int8()) for i in range(14)] + [("label", pa.int8())])
    np.testing.assert_array_equal(table.to_pandas().to_numpy(), csv_rows)


def test_the_project_loader_accepts_a_part(tmp_path: Path) -> None:
    parts = write_parquet_parts(tmp_path / "parts", 500, part_rows=200)
    dataset = load_dataset(parts / "part-00001.parquet")
    assert dataset.n_rows == 200
    assert dataset.features.shape == (200, 14)


def test_a_failed_write_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    walk_windows = generate_data.walk_windows

    def fail_on_third_chunk(n_rows: int, seed: int, chunk_sizes: Iterator[int]) -> Iterator[np.ndarray]:
        for index, flags in enumerate(walk_windows(n_rows, seed, chunk_sizes)):
            if index == 2:
                raise OSError("disk full")
            yield flags

    monkeypatch.setattr(generate_data, "walk_windows", fail_on_third_chunk)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_parts(tmp_path / "parts", 100, part_rows=20, chunk_rows=10)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    with pytest.raises(FileExistsError):
        write_parquet_parts(tmp_path / "parts", 10)


@pytest.mark.parametrize(("n_rows", "part_rows"), [(0, 10), (10, 0)])
def test_parts_reject_empty_sizes(tmp_path: Path, n_rows: int, part_rows: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        write_parquet_parts(tmp_path / "parts", n_rows, part_rows=part_rows)


def test_cached_parts_are_reused_and_an_incomplete_folder_is_not(tmp_path: Path) -> None:
    first = parts_for(tmp_path, 250, seed=0, part_rows=100)
    stamps = [part.stat().st_mtime_ns for part in sorted(first.iterdir())]
    assert parts_for(tmp_path, 250, seed=0, part_rows=100) == first
    assert [part.stat().st_mtime_ns for part in sorted(first.iterdir())] == stamps
    (first / "part-00002.parquet").unlink()
    assert part_rows_of(parts_for(tmp_path, 250, seed=0, part_rows=100)) == [100, 100, 50]


def test_single_file_holds_the_parts_rows(tmp_path: Path) -> None:
    parts = parts_for(tmp_path, 250, seed=1, part_rows=100)
    single = single_file_for(parts)
    assert pq.read_table(single).equals(pq.read_table(parts))
    assert single_file_for(parts) == single


@pytest.mark.parametrize(
    ("cmdline", "parent_role", "expected"),
    [
        (["/venv/bin/python", "-m", "mlflow", "run", "/repo", "-P", "force=true"], "", "mlflow run CLI"),
        (["python", "main.py", "--data-file", "x"], "mlflow run CLI", "main (driver)"),
        (["python", "train_model.py", "--engine", "dask"], "main (driver)", "train_model"),
        (["python", "/repo/evaluate_model.py"], "main (driver)", "evaluate_model"),
        (
            ["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"],
            "train_model",
            "dask worker (train_model)",
        ),
        (
            ["python", "-c", "from multiprocessing.resource_tracker import main;main(4)"],
            "x",
            "resource tracker",
        ),
        (["/usr/bin/git", "cat-file"], "mlflow run CLI", "git"),
        ([], "", "?"),
    ],
)
def test_process_role(cmdline: list[str], parent_role: str, expected: str) -> None:
    assert process_role(cmdline, parent_role) == expected


def measurement(wall_s: float, largest_bytes: int, status: str = "ok") -> TreeMeasurement:
    processes = [ProcessPeak(1, 0, "train_model", "python train_model.py", largest_bytes)]
    return TreeMeasurement(wall_s, 2 * largest_bytes, processes, status, 0, 0)


def test_table_reports_ratios_kills_and_runs_left_out() -> None:
    measured = SizeResult(
        10_000_000,
        1,
        20 * MB,
        EngineRun("dask", "parts", measurement(30.0, 900 * MB)),
        EngineRun("local", "parts", measurement(20.0, 800 * MB)),
    )
    note = local_not_run_note([measured], 1_000_000_000, 100_000_000)
    assert "800 MB" not in note and "78 GB" in note and "train_model" in note
    big = SizeResult(
        1_000_000_000,
        100,
        2 * GB,
        EngineRun("dask", "parts", measurement(600.0, 5 * GB, "killed: rss")),
        EngineRun("local", "", note=note),
    )
    header, first, second = table_rows([measured, big])
    assert header[3] == "wall ratio dask/local"
    assert first[3] == "1.50"
    assert first[4] == "900 (train_model)"
    assert first[8] == "no"
    assert second[1] == "killed: rss after 600.0"
    assert second[2] == "not run"
    assert second[3] == "-"
    assert second[8] == "yes"
    records = csv_records([measured, big])
    assert [(r["rows"], r["engine"], r["status"]) for r in records] == [
        (10_000_000, "dask", "ok"),
        (10_000_000, "local", "ok"),
        (1_000_000_000, "dask", "killed: rss"),
        (1_000_000_000, "local", "not run"),
    ]
    assert records[0]["wall_ratio_dask_local"] == 1.5
    assert records[3]["wall_s"] == ""


def test_the_median_repeat_is_reported_unless_one_broke() -> None:
    runs = [EngineRun("dask", "parts", measurement(wall, MB)) for wall in (30.0, 10.0, 20.0)]
    chosen = representative(runs)
    assert chosen is runs[2]
    assert chosen.walls_s == [30.0, 10.0, 20.0]
    runs.append(EngineRun("dask", "parts", measurement(5.0, MB, "killed: disk")))
    assert representative(runs).status == "killed: disk"


@pytest.mark.slow
def test_sampler_keeps_each_process_peak(tmp_path: Path) -> None:
    # The child holds 300 MB until the test has sampled it (ready file, then a go file), so the
    # sample sees it however slowly a busy machine starts the processes.
    ready, go = tmp_path / "ready", tmp_path / "go"
    child = (
        f"import pathlib, time\nb = bytearray(300 * 1024 * 1024)\npathlib.Path({str(ready)!r}).touch()\n"
        f"while not pathlib.Path({str(go)!r}).exists():\n    time.sleep(0.01)\n"
    )
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    process = subprocess.Popen([sys.executable, "-c", parent])
    try:
        sampler = TreeSampler(psutil.Process(process.pid))
        poll_until(lambda: True if ready.exists() else None, timeout=60, what="the child's allocation")
        total = sampler.sample()
    finally:
        go.touch()
        process.wait(timeout=60)
    processes = sampler.processes()
    largest = processes[0]
    assert largest.peak_rss_bytes > 300 * MB
    assert "bytearray" in largest.cmdline
    assert largest.ppid == processes[1].pid == process.pid
    assert processes[1].peak_rss_bytes < 100 * MB
    assert sampler.peak_tree == total >= largest.peak_rss_bytes + processes[1].peak_rss_bytes


@pytest.mark.slow
def test_monitor_kills_the_tree_past_the_limit_and_keeps_stderr(tmp_path: Path) -> None:
    script = (
        "import sys, time; print('allocating', file=sys.stderr, flush=True); "
        "b = bytearray(400 * 1024**2); time.sleep(30)"
    )
    result = measure_tree([sys.executable, "-c", script], cwd=tmp_path, rss_limit_bytes=200 * MB)
    assert result.status == "killed: rss"
    assert result.stderr_tail == ["allocating"]
    failed = measure_tree([sys.executable, "-c", "raise SystemExit('no such thing')"], cwd=tmp_path)
    assert failed.status == "failed"
    assert failed.stderr_tail == ["no such thing"]


@pytest.mark.slow
def test_dask_scale_benchmark_end_to_end(tmp_path: Path) -> None:
    """Both engines at 20k rows, the dask engine alone at 30k (3 parts): needs the dask engine."""
    output = tmp_path / "results" / "dask.json"
    command = [
        sys.executable,
        str(PROJECT_ROOT / "benchmarks" / "dask_scale.py"),
        "--rows=20000,30000",
        "--part-rows=10000",
        "--local-max-rows=20000",
        "--num-boost-round=5",
        f"--work-dir={tmp_path / 'work'}",
        f"--output={output}",
    ]
    completed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    payload = json.loads(output.read_text())
    small, large = payload["results"]
    assert (small["rows"], small["parts"], large["rows"], large["parts"]) == (20_000, 2, 30_000, 3)
    for run in (small["dask"], small["local"], large["dask"]):
        assert run["status"] == "ok", run["measurement"]["stderr_tail"]
        peaks = run["measurement"]["processes"]
        assert peaks == sorted(peaks, key=lambda peak: peak["peak_rss_bytes"], reverse=True)
        roles = {peak["role"] for peak in peaks}
        assert {"mlflow run CLI", "main (driver)", "train_model", "evaluate_model"} <= roles
        assert 0 < peaks[0]["peak_rss_bytes"] <= run["measurement"]["peak_tree_rss_bytes"] < 20 * GB
        assert run["measurement"]["wall_s"] > 0
        steps = [step["entry_point"] for step in run["steps"]]
        assert steps == ["main", "train_model", "evaluate_model", "register_model"]
    assert payload["settings"]["local_input"] == "parts"
    assert "dask" in small["dask"]["tags"].values()
    assert small["wall_ratio_dask_local"] > 0
    assert large["local"]["status"] == "not run"
    assert "local-max-rows" in large["local"]["note"]
    with output.with_suffix(".csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert [(r["rows"], r["engine"], r["status"]) for r in records] == [
        ("20000", "dask", "ok"),
        ("20000", "local", "ok"),
        ("30000", "dask", "ok"),
        ("30000", "local", "not run"),
    ]
    # The data are cached for the next invocation; the runs' scratch folders are gone.
    assert sorted(path.name for path in (tmp_path / "work").iterdir()) == ["data"]
