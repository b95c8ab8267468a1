"""The pipeline's fixed cost against two references, the original job and a plain script, per process.

    .venv/bin/python benchmarks/fixed_cost.py [--repeats 5] [--rows 10000000] [--repeats-large 2]

Two comparisons, each alternating its two commands in one invocation so that both see the same
machine load, each against a fresh SQLite store:

- **shipped data**: ``mlflow run . --env-manager local -P force=true`` against the job this project
  replaces (``benchmarks/original_job``: four processes, autolog, registration inline), both on
  ``data/training/data.csv``. Target: pipeline / original <= 0.8.
- **large file** (``--rows``, default 10M generated rows): the pipeline at ``num_boost_round=10``
  and ``max_depth=6`` against ``../shared/perf/naive_reference.py`` (the plain one-process script)
  with the same rounds and depth. Target: pipeline / reference <= 1.0.

For every pipeline run the breakdown comes from its tracking store: when each run was created
(by the process that launched it, just before starting it) and ended, and the ``timing_*``
metrics each step logs (``startup`` is from its launch to the start of its work: the interpreter
and the imports; ``wait`` is the time it waited for the step before it, which it overlaps).
The median run's breakdown is printed and saved with the medians in
``benchmarks/results/fixed_cost.json``.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale import dataset_for, measure
from tests.conftest import PROJECT_ROOT, subprocess_env

logger = logging.getLogger("fixed_cost")

ORIGINAL_JOB: Final = PROJECT_ROOT / "benchmarks" / "original_job"
PLAIN_REFERENCE: Final = PROJECT_ROOT.parent / "shared" / "perf" / "naive_reference.py"
SHIPPED_DATA: Final = PROJECT_ROOT / "data" / "training" / "data.csv"
DEFAULT_OUTPUT: Final = PROJECT_ROOT / "benchmarks" / "results" / "fixed_cost.json"
# The large comparison's settings: the rounds and depth the plain reference is timed with.
LARGE_ROUNDS: Final = 10
LARGE_DEPTH: Final = 6
STEPS: Final = ("train_model", "evaluate_model", "register_model")


@dataclass
class Span:
    """One process (or phase of one) on the run's timeline, in seconds from the command's start."""

    what: str
    start_s: float
    end_s: float
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class Breakdown:
    """Where one pipeline run's wall time went: the processes, each with its phases."""

    wall_s: float
    spans: list[Span] = field(default_factory=list)


def mlflow_run(project: Path, *params: str) -> list[str]:
    """The ``mlflow run`` command line for ``project`` with ``-P`` parameters."""
    command = [sys.executable, "-m", "mlflow", "run", str(project), "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    return command


def breakdown(tracking_uri: str, launched: float, wall_s: float) -> Breakdown:
    """The pipeline run's timeline, read from its store: processes, steps and their phases.

    ``launched`` is the wall-clock time the ``mlflow run`` command started. The steps overlap:
    each starts while the one before it runs and waits for it (its ``wait`` phase).
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs(["0"], max_results=100)
    by_entry = {run.data.tags.get("mlflow.project.entryPoint"): run for run in runs}
    parent = by_entry["main"]

    def at(millis: int) -> float:
        return millis / 1000 - launched

    result = Breakdown(wall_s)
    result.spans.append(Span("mlflow run CLI: start-up, store, parent run", 0.0, at(parent.info.start_time)))
    first_step = min(at(by_entry[entry].info.start_time) for entry in STEPS)
    result.spans.append(Span("main: start-up, checks, run key", at(parent.info.start_time), first_step))
    for entry in STEPS:
        run = by_entry[entry]
        start, end = at(run.info.start_time), at(run.info.end_time)
        parts = {
            name.removeprefix("timing_").removesuffix("_s"): value
            for name, value in run.data.metrics.items()
            if name.startswith("timing_")
        }
        parts["rest (store, records, run end)"] = end - start - sum(parts.values())
        result.spans.append(Span(entry, start, end, parts))
    last_step = max(at(by_entry[entry].info.end_time) for entry in STEPS)
    result.spans.append(Span("main: summary, parent run end", last_step, at(parent.info.end_time)))
    result.spans.append(Span("exits (main, then the CLI)", at(parent.info.end_time), wall_s))
    return result


def timed_pipeline(work_dir: Path, *params: str) -> Breakdown:
    """One ``mlflow run`` of the pipeline against a fresh store, with its breakdown."""
    scratch = Path(tempfile.mkdtemp(prefix="pipeline-", dir=work_dir))
    try:
        tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
        launched = time.time()
        measurement = measure(
            mlflow_run(PROJECT_ROOT, "force=true", *params), cwd=scratch, env=subprocess_env(tracking_uri)
        )
        return breakdown(tracking_uri, launched, measurement.wall_s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def timed_original(work_dir: Path) -> float:
    """Wall seconds of one run of the original job on the shipped data, against a fresh store."""
    scratch = Path(tempfile.mkdtemp(prefix="original-", dir=work_dir))
    try:
        tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
        command = mlflow_run(ORIGINAL_JOB, f"data_file={SHIPPED_DATA}")
        return measure(command, cwd=scratch, env=subprocess_env(tracking_uri)).wall_s
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def timed_plain(work_dir: Path, data_file: Path) -> float:
    """Wall seconds of one run of the plain reference script on ``data_file``."""
    scratch = Path(tempfile.mkdtemp(prefix="plain-", dir=work_dir))
    try:
        command = [
            sys.executable,
            str(PLAIN_REFERENCE),
            str(data_file),
            str(scratch / "predictions.csv"),
            str(LARGE_ROUNDS),
            str(LARGE_DEPTH),
        ]
        return measure(command, cwd=scratch).wall_s
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def median_breakdown(runs: list[Breakdown]) -> Breakdown:
    """The run with the median wall time (a real run, not a mix of segments from several)."""
    ordered = sorted(runs, key=lambda run: run.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def breakdown_table(run: Breakdown) -> str:
    """The breakdown as a Markdown table: each process's span on the timeline and its phases."""
    lines = ["| process | from s | to s | seconds | where the time went |", "|---|---:|---:|---:|---|"]
    for span in run.spans:
        parts = ", ".join(f"{name} {value:.2f}" for name, value in span.parts.items())
        seconds = span.end_s - span.start_s
        lines.append(f"| {span.what} | {span.start_s:.2f} | {span.end_s:.2f} | {seconds:.2f} | {parts} |")
    lines.append(f"| **wall** | | | **{run.wall_s:.2f}** | |")
    return "\n".join(lines)


def git_commit() -> str:
    """The checked-out commit (with ``+`` when the tree has changes), or empty outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return commit + ("+" if dirty else "")


def compare(
    label: str,
    reference: str,
    time_reference: Callable[[], float],
    time_pipeline: Callable[[], Breakdown],
    repeats: int,
    target: float,
) -> tuple[dict[str, object], Breakdown]:
    """Alternate the reference and the pipeline ``repeats`` times; their medians, ratio and runs.

    Returns:
        The medians (``<reference>_s``, ``pipeline_s``), their ``ratio``, every run's wall
        seconds, and the breakdown of the median pipeline run.
    """
    references, pipelines = [], []
    for repeat in range(repeats):
        # Alternating, so both see the same load on average.
        references.append(time_reference())
        pipelines.append(time_pipeline())
        logger.info(
            "%s %d/%d: %s %.2fs, pipeline %.2fs",
            label,
            repeat + 1,
            repeats,
            reference,
            references[-1],
            pipelines[-1].wall_s,
        )
    result: dict[str, object] = {
        f"{reference}_s": statistics.median(references),
        "pipeline_s": statistics.median(run.wall_s for run in pipelines),
        f"{reference}_runs_s": references,
        "pipeline_runs_s": [run.wall_s for run in pipelines],
    }
    result["ratio"] = result["pipeline_s"] / result[f"{reference}_s"]
    median_run = median_breakdown(pipelines)
    logger.info(
        "%s, medians of %d: pipeline %.2fs, %s %.2fs, ratio %.2f (target <= %.1f)\n%s",
        label,
        repeats,
        result["pipeline_s"],
        reference,
        result[f"{reference}_s"],
        result["ratio"],
        target,
        breakdown_table(median_run),
    )
    return result, median_run


@click.command()
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True, help="Shipped-data pairs.")
@click.option(
    "--rows", type=click.IntRange(0), default=10_000_000, show_default=True, help="Large file (0 skips it)."
)
@click.option(
    "--repeats-large", type=click.IntRange(1), default=2, show_default=True, help="Large-file pairs."
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(tempfile.gettempdir()) / "pystock-training-bench",
    show_default=True,
    help="Generated data (cached) and each run's scratch folder.",
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUTPUT, show_default=True
)
def main(repeats: int, rows: int, repeats_large: int, work_dir: Path, output: Path) -> None:
    """Measure the pipeline's fixed cost against the original job and the plain reference."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work_dir.mkdir(parents=True, exist_ok=True)
    if rows and not PLAIN_REFERENCE.is_file():
        raise click.ClickException(f"{PLAIN_REFERENCE}: not found (the plain reference); --rows 0 skips it")

    shipped, median_run = compare(
        "shipped data",
        "original",
        lambda: timed_original(work_dir),
        lambda: timed_pipeline(work_dir),
        repeats,
        target=0.8,
    )
    large: dict[str, object] | None = None
    large_run: Breakdown | None = None
    if rows:
        data_file = dataset_for(work_dir, rows, seed=0)
        settings = (f"data_file={data_file}", f"num_boost_round={LARGE_ROUNDS}", f"max_depth={LARGE_DEPTH}")
        large, large_run = compare(
            f"{rows} rows",
            "plain",
            lambda: timed_plain(work_dir, data_file),
            lambda: timed_pipeline(work_dir, *settings),
            repeats_large,
            target=1.0,
        )
        large["rows"] = rows

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "commit": git_commit(),
                "machine": {"python": platform.python_version(), "processor": platform.processor()},
                "shipped_data": shipped | {"breakdown": asdict(median_run)},
                "large": None if large is None else large | {"breakdown": asdict(large_run)},
            },
            indent=2,
        )
        + "\n"
    )
    logger.info("wrote %s", output)


if __name__ == "__main__":
    main()
