"""Wall time and peak memory of the pipeline against the naive one-process reference, by data size.

    .venv/bin/python benchmarks/scale.py [--rows 1000,10000,100000] [--num-boost-round 100]

For each row count, on one generated file (benchmarks/generate_data.py, cached in --work-dir),
it runs in turn the whole pipeline (``mlflow run . --env-manager local -P force=true`` against a
fresh SQLite store, so there is no champion and no skip) and benchmarks/naive_reference.py with the
same settings. Each command is timed and its process tree's memory sampled every 20 ms: the peak
of the summed RSS of the process and all its descendants (shared pages count once per process,
so this is an upper bound, as a container's memory limit would see it). A tree whose RSS passes
--rss-limit-gb is killed and reported as "killed at > X GB": the naive reference would need ~30 GB at
100M rows, which would take the shared machine down.

It logs a table (ratios are pipeline ÷ naive) and the pipeline's per-step breakdown from its
tracking store, and writes the table as JSON and CSV next to a log-log plot (--output).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.generate_data import LINE_BYTES, write_dataset
from tests.conftest import PROJECT_ROOT, subprocess_env

if TYPE_CHECKING:
    from mlflow.entities import Run

logger = logging.getLogger("scale")

DEFAULT_ROWS: Final = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
DEFAULT_WORK_DIR: Final = Path(tempfile.gettempdir()) / "pystock-training-bench"
DEFAULT_OUTPUT: Final = PROJECT_ROOT / "benchmarks" / "results" / "scale.png"
SAMPLE_SECONDS: Final = 0.02
STDERR_TAIL_LINES: Final = 30
NAIVE_SCRIPT: Final = PROJECT_ROOT / "benchmarks" / "naive_reference.py"
# The mlflow run CLI, main and the three steps: each is a Python process that imports mlflow.
FLOOR_PROCESSES: Final = 5
MB: Final = 1024**2
GB: Final = 1024**3


class CommandFailedError(click.ClickException):
    """A measured command exited non-zero on its own (not killed for its memory)."""


@dataclass(frozen=True)
class Measurement:
    """One measured command.

    Attributes:
        wall_s: Seconds from start to exit (to the kill, if killed).
        peak_rss_bytes: Highest summed RSS of the process tree seen in any sample.
        killed: The tree passed the RSS limit and was killed.
        returncode: The root process's exit status (negative: the signal that ended it).
        pid: The root process's id.
    """

    wall_s: float
    peak_rss_bytes: int
    killed: bool
    returncode: int
    pid: int


@dataclass(frozen=True)
class StepTiming:
    """One run of the pipeline's tree, as its tracking store recorded it."""

    name: str
    entry_point: str
    duration_s: float | None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SizeResult:
    """Both measurements at one row count; either may be absent when skipped."""

    rows: int
    pipeline: Measurement | None
    naive: Measurement | None
    steps: list[StepTiming]


@dataclass
class ProcessPeak:
    """One process of a measured tree at its highest RSS."""

    pid: int
    ppid: int
    role: str
    cmdline: str
    peak_rss_bytes: int


class TreeSampler:
    """Peak RSS per process of a tree, and of the tree's sum, over repeated samples."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.peaks: dict[tuple[int, float], ProcessPeak] = {}
        self.peak_tree = 0

    def sample(self) -> int:
        """Sample every process once; return the tree's summed RSS (0 once the tree is gone)."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return 0
        total = 0
        for proc in procs:
            # Processes come and go between listing and reading; a vanished one holds no memory.
            try:
                rss = proc.memory_info().rss
                key = (proc.pid, proc.create_time())
                total += rss
                peak = self.peaks.get(key)
                if peak is None or rss > peak.peak_rss_bytes:
                    # Re-read on each new peak: a shell that execs Python keeps its pid.
                    cmdline = proc.cmdline()
                    self.peaks[key] = ProcessPeak(proc.pid, proc.ppid(), "", " ".join(cmdline), rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.peak_tree = max(self.peak_tree, total)
        return total

    def processes(self) -> list[ProcessPeak]:
        """Every process seen, largest peak first."""
        return sorted(self.peaks.values(), key=lambda peak: peak.peak_rss_bytes, reverse=True)


def kill_tree(root: psutil.Process) -> None:
    """SIGKILL ``root``, its process group and every descendant found, and wait for them."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = [root]
    # The root leads its own process group (start_new_session), so killpg also reaches children
    # forked after the listing above; the listing reaches any that started a session of their own.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root.pid, signal.SIGKILL)
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(procs, timeout=10)


@dataclass(frozen=True)
class SampledRun:
    """A command run to its end, or to the kill ``stop`` asked for, and its tree's samples."""

    wall_s: float
    returncode: int
    pid: int
    # What ``stop`` returned to have the tree killed; "" when the command ended on its own.
    stopped: str
    sampler: TreeSampler
    stderr_path: Path


def run_sampled(
    command: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    stop: Callable[[int], str | None] = lambda total: None,
    sample_seconds: float = SAMPLE_SECONDS,
) -> SampledRun:
    """Run ``command``, sampling each process of its tree, and kill the tree when ``stop`` says why.

    ``stop`` gets the tree's summed RSS after each sample. stdout and stderr go to files in
    ``log_dir`` (default ``cwd``), not pipes: a pipe nobody reads while sampling would fill up
    and stall a chatty command.
    """
    log_dir = log_dir or cwd
    stderr_path = log_dir / "stderr.log"
    stopped = ""
    with (log_dir / "stdout.log").open("wb") as stdout, stderr_path.open("wb") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
        root = psutil.Process(process.pid)
        sampler = TreeSampler(root)
        try:
            while process.poll() is None:
                stopped = stop(sampler.sample()) or ""
                if stopped:
                    kill_tree(root)
                    break
                time.sleep(sample_seconds)
            returncode = process.wait()
            wall = time.monotonic() - started
        except BaseException:
            # Interrupted (Ctrl-C): leave nothing running that this benchmark started.
            kill_tree(root)
            process.wait()
            raise
    return SampledRun(wall, returncode, process.pid, stopped, sampler, stderr_path)


def measure(
    command: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    rss_limit_bytes: int | None = None,
    log_dir: Path | None = None,
) -> Measurement:
    """Run ``command``, sampling its process tree's summed RSS, and kill the tree past the limit.

    Raises:
        CommandFailedError: The command exited non-zero and was not killed for its memory; the
            message ends with the last lines of its stderr.
    """
    run = run_sampled(
        command,
        cwd=cwd,
        env=env,
        log_dir=log_dir,
        stop=lambda total: "rss" if rss_limit_bytes is not None and total > rss_limit_bytes else None,
    )
    killed = bool(run.stopped)
    # kill_tree reaped the root already, so Popen can only report 0; say what happened.
    returncode = -signal.SIGKILL if killed else run.returncode
    if returncode != 0 and not killed:
        tail = run.stderr_path.read_text(errors="replace").splitlines()[-STDERR_TAIL_LINES:]
        raise CommandFailedError(
            f"{' '.join(command)} exited {returncode} (logs in {log_dir or cwd}); its stderr ends:\n"
            + "\n".join(tail)
        )
    return Measurement(
        wall_s=run.wall_s,
        peak_rss_bytes=run.sampler.peak_tree,
        killed=killed,
        returncode=returncode,
        pid=run.pid,
    )


def parse_rows(values: Iterable[str]) -> list[int]:
    """Row counts from repeated and/or comma-separated values (``1000,1e4`` and ``10_000`` too)."""
    counts = set()
    for value in values:
        for item in value.split(","):
            text = item.strip()
            if not text:
                continue
            try:
                count = int(float(text)) if "e" in text.lower() else int(text)
            except ValueError as exc:
                raise click.BadParameter(f"{text!r} is not a row count") from exc
            if count < 1:
                raise click.BadParameter(f"row counts must be at least 1, got {count}")
            counts.add(count)
    return sorted(counts)


def dataset_for(work_dir: Path, n_rows: int, seed: int) -> Path:
    """The generated file for ``n_rows``, written once and reused by later runs."""
    path = work_dir / "data" / f"walk-{n_rows}-seed{seed}.csv"
    # The generator renames a finished file into place, so a file of the right size is complete.
    if path.is_file() and path.stat().st_size == n_rows * LINE_BYTES:
        logger.info("reusing %s", path)
        return path
    started = time.monotonic()
    write_dataset(path, n_rows, seed=seed)
    logger.info("generated %s in %.1fs", path, time.monotonic() - started)
    return path


def pipeline_steps(tracking_uri: str) -> list[StepTiming]:
    """The pipeline run and its child runs in a fresh store, with durations and timing_* metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000)
    parents = [run for run in runs if run.data.tags.get("mlflow.project.entryPoint") == "main"]
    if len(parents) != 1:
        logger.warning("expected one pipeline run in %s, found %d", tracking_uri, len(parents))
        return []
    parent = parents[0]
    children = sorted(
        (run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda run: run.info.start_time,
    )
    return [_step_timing(run) for run in [parent, *children]]


def _step_timing(run: Run) -> StepTiming:
    info, data = run.info, run.data
    duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    return StepTiming(
        name=info.run_name or "",
        entry_point=data.tags.get("mlflow.project.entryPoint", ""),
        duration_s=duration,
        timings={key: value for key, value in sorted(data.metrics.items()) if key.startswith("timing_")},
    )


def run_pipeline(
    data_file: Path, num_boost_round: int, max_depth: int, scratch: Path, rss_limit_bytes: int
) -> tuple[Measurement, list[StepTiming]]:
    """Measure one ``mlflow run`` of the whole pipeline against a fresh store in ``scratch``."""
    tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local"]
    for name, value in (
        ("data_file", data_file),
        ("num_boost_round", num_boost_round),
        ("max_depth", max_depth),
        ("force", "true"),
    ):
        command += ["-P", f"{name}={value}"]
    measurement = measure(
        command, cwd=scratch, env=subprocess_env(tracking_uri), rss_limit_bytes=rss_limit_bytes
    )
    steps = [] if measurement.killed else pipeline_steps(tracking_uri)
    return measurement, steps


def run_naive(
    data_file: Path, num_boost_round: int, max_depth: int, scratch: Path, rss_limit_bytes: int
) -> Measurement:
    """Measure one run of benchmarks/naive_reference.py with the same settings."""
    command = [
        sys.executable,
        str(NAIVE_SCRIPT),
        f"--data-file={data_file}",
        f"--predictions-file={scratch / 'predictions.csv'}",
        f"--num-boost-round={num_boost_round}",
        f"--max-depth={max_depth}",
    ]
    return measure(command, cwd=scratch, rss_limit_bytes=rss_limit_bytes)


@dataclass(frozen=True)
class FloorResult:
    """The pipeline on the shipped data against its start-up floor, median seconds of each."""

    repeats: int
    floor_s: float
    pipeline_s: float

    @property
    def gap_s(self) -> float:
        """Seconds the pipeline spends beyond starting its processes."""
        return self.pipeline_s - self.floor_s


def measure_floor(work_dir: Path, repeats: int) -> FloorResult:
    """The default pipeline on data/training/data.csv against the floor its design sets.

    The floor is what ``mlflow run`` of a four-entry-point project cannot avoid: five Python
    processes one after another (the ``mlflow run`` CLI, main and three steps), each importing
    mlflow. Both are measured alternately, ``repeats`` times each, and the medians reported.
    """
    floors, pipelines = [], []
    for _ in range(repeats):
        scratch = Path(tempfile.mkdtemp(prefix="floor-", dir=work_dir))
        try:
            floors.append(
                sum(
                    measure([sys.executable, "-c", "import mlflow"], cwd=scratch).wall_s
                    for _ in range(FLOOR_PROCESSES)
                )
            )
            tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
            command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local"]
            pipelines.append(
                measure([*command, "-P", "force=true"], cwd=scratch, env=subprocess_env(tracking_uri)).wall_s
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return FloorResult(repeats, statistics.median(floors), statistics.median(pipelines))


def _seconds(measurement: Measurement | None) -> str:
    if measurement is None:
        return "-"
    return f"killed after {measurement.wall_s:.1f}" if measurement.killed else f"{measurement.wall_s:.2f}"


def _megabytes(measurement: Measurement | None, limit_gb: float) -> str:
    if measurement is None:
        return "-"
    return f"killed at > {limit_gb:g} GB" if measurement.killed else f"{measurement.peak_rss_bytes / MB:.0f}"


def _ratio(pipeline: Measurement | None, naive: Measurement | None, attribute: str) -> float | None:
    if pipeline is None or naive is None or pipeline.killed or naive.killed:
        return None
    denominator = getattr(naive, attribute)
    return getattr(pipeline, attribute) / denominator if denominator else None


def table_rows(results: Sequence[SizeResult], limit_gb: float) -> list[list[str]]:
    """The result table as text cells, header first."""
    header = [
        "rows",
        "pipeline wall s",
        "naive wall s",
        "wall ratio",
        "pipeline peak RSS MB",
        "naive peak RSS MB",
        "RSS ratio",
    ]
    rows = [header]
    for result in results:
        wall_ratio = _ratio(result.pipeline, result.naive, "wall_s")
        rss_ratio = _ratio(result.pipeline, result.naive, "peak_rss_bytes")
        rows.append(
            [
                f"{result.rows:,}",
                _seconds(result.pipeline),
                _seconds(result.naive),
                "-" if wall_ratio is None else f"{wall_ratio:.2f}",
                _megabytes(result.pipeline, limit_gb),
                _megabytes(result.naive, limit_gb),
                "-" if rss_ratio is None else f"{rss_ratio:.2f}",
            ]
        )
    return rows


def csv_records(results: Sequence[SizeResult]) -> list[dict[str, object]]:
    """The table as plain numbers for the CSV: empty where a run was skipped or killed."""

    def number(measurement: Measurement | None, attribute: str, scale: float = 1) -> object:
        if measurement is None or measurement.killed:
            return ""
        return round(getattr(measurement, attribute) / scale, 3)

    records = []
    for result in results:
        wall_ratio = _ratio(result.pipeline, result.naive, "wall_s")
        rss_ratio = _ratio(result.pipeline, result.naive, "peak_rss_bytes")
        records.append(
            {
                "rows": result.rows,
                "pipeline_wall_s": number(result.pipeline, "wall_s"),
                "naive_wall_s": number(result.naive, "wall_s"),
                "wall_ratio": "" if wall_ratio is None else round(wall_ratio, 3),
                "pipeline_peak_rss_mb": number(result.pipeline, "peak_rss_bytes", MB),
                "naive_peak_rss_mb": number(result.naive, "peak_rss_bytes", MB),
                "rss_ratio": "" if rss_ratio is None else round(rss_ratio, 3),
                "pipeline_killed": bool(result.pipeline and result.pipeline.killed),
                "naive_killed": bool(result.naive and result.naive.killed),
            }
        )
    return records


def markdown_table(cells: Sequence[Sequence[str]]) -> str:
    """A Markdown table with aligned columns (numbers right-aligned), ready to paste in a README."""
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    header, *body = cells
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (width + 1) + ":" for width in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in body]
    return "\n".join(lines)


def log_steps(result: SizeResult) -> None:
    """Log the pipeline's per-step durations and whatever timing_* metrics the runs logged."""
    if not result.steps:
        return
    logger.info("")
    logger.info("pipeline steps at %s rows (run durations from the tracking store):", f"{result.rows:,}")
    for step in result.steps:
        duration = "?" if step.duration_s is None else f"{step.duration_s:7.2f}s"
        label = step.name if step.entry_point in ("", step.name) else f"{step.name} ({step.entry_point})"
        timings = ", ".join(f"{key} {value:.2f}" for key, value in step.timings.items())
        logger.info("  %-30s %s%s", label, duration, f"  {timings}" if timings else "")


def write_results(
    results: Sequence[SizeResult],
    settings: dict[str, object],
    limit_gb: float,
    output: Path,
    floor: FloorResult | None = None,
) -> None:
    """Write the plots to ``output`` and the results beside it as .json (everything) and .csv (the table)."""
    payload = {
        "settings": settings,
        "results": [asdict(result) for result in results],
        "shipped_data": None if floor is None else asdict(floor) | {"gap_s": floor.gap_s},
    }
    write_table_files(output, payload, csv_records(results))
    plot(results, limit_gb, output)


def plot(results: Sequence[SizeResult], limit_gb: float, output: Path) -> None:
    """Two log-log panels, wall time and peak RSS against rows; killed runs as crosses at the limit."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    figure, (wall_axis, rss_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    for kind, colour in (("pipeline", "tab:blue"), ("naive", "tab:orange")):
        measured = [(r.rows, m) for r in results if (m := getattr(r, kind)) is not None]
        done = [(n, m) for n, m in measured if not m.killed]
        killed = [n for n, m in measured if m.killed]
        if done:
            rows = [n for n, _ in done]
            wall_axis.plot(rows, [m.wall_s for _, m in done], "o-", color=colour, label=kind)
            rss_axis.plot(rows, [m.peak_rss_bytes / MB for _, m in done], "o-", color=colour, label=kind)
        if killed:
            rss_axis.plot(
                killed, [limit_gb * GB / MB] * len(killed), "x", color=colour, ms=10, label=f"{kind} killed"
            )
    for axis, title, unit in ((wall_axis, "wall time", "s"), (rss_axis, "peak RSS (process tree)", "MB")):
        axis.set(xscale="log", yscale="log", xlabel="rows", ylabel=f"{title}, {unit}", title=title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)


def common_options(
    default_rows: Sequence[int], data: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The options both scale benchmarks take: sizes, model, data seed, work dir and RSS limit."""
    options = [
        click.option(
            "--rows",
            "rows_values",
            multiple=True,
            default=[",".join(map(str, default_rows))],
            show_default=True,
            help="Row counts, repeatable or comma-separated (1e9 works).",
        ),
        click.option("--num-boost-round", type=click.IntRange(min=1), default=100, show_default=True),
        click.option("--max-depth", type=click.IntRange(min=1), default=3, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated data."),
        click.option(
            "--work-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=DEFAULT_WORK_DIR,
            show_default=True,
            help=f"Generated {data} (cached by row count) and the runs' scratch folders; keep it out of "
            "the repo.",
        ),
        click.option(
            "--rss-limit-gb",
            type=click.FloatRange(min=0, min_open=True),
            default=20.0,
            show_default=True,
            help="Kill a measured process tree whose summed RSS passes this.",
        ),
    ]

    def apply(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def write_table_files(output: Path, payload: dict[str, object], records: list[dict[str, object]]) -> None:
    """``payload`` as ``output`` with the suffix .json, and the table ``records`` beside it as .csv."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    with output.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["rows"])
        writer.writeheader()
        writer.writerows(records)


@click.command()
@common_options(DEFAULT_ROWS, "data")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_OUTPUT,
    show_default=True,
    help="PNG to write; the table goes beside it as .json and .csv.",
)
@click.option("--skip-pipeline", is_flag=True, help="Measure only the naive reference.")
@click.option("--skip-naive", is_flag=True, help="Measure only the pipeline.")
@click.option("--keep-runs", is_flag=True, help="Keep each run's scratch folder (tracking store, logs).")
@click.option(
    "--floor-repeats",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Times to measure the shipped-data pipeline against its start-up floor (0: skip).",
)
def main(
    rows_values: tuple[str, ...],
    num_boost_round: int,
    max_depth: int,
    seed: int,
    work_dir: Path,
    rss_limit_gb: float,
    output: Path,
    skip_pipeline: bool,
    skip_naive: bool,
    keep_runs: bool,
    floor_repeats: int,
) -> None:
    """Compare the pipeline with the naive one-process reference at several data sizes."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    row_counts = parse_rows(rows_values)
    work_dir = work_dir.expanduser().resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    limit = math.floor(rss_limit_gb * GB)
    results: list[SizeResult] = []
    for n_rows in row_counts:
        data_file = dataset_for(work_dir, n_rows, seed)
        pipeline = naive = None
        steps: list[StepTiming] = []
        if not skip_pipeline:
            scratch = Path(tempfile.mkdtemp(prefix=f"pipeline-{n_rows}-", dir=work_dir))
            logger.info("%s rows: pipeline (scratch %s)", f"{n_rows:,}", scratch)
            pipeline, steps = run_pipeline(data_file, num_boost_round, max_depth, scratch, limit)
            if not keep_runs:
                shutil.rmtree(scratch, ignore_errors=True)
        if not skip_naive:
            scratch = Path(tempfile.mkdtemp(prefix=f"naive-{n_rows}-", dir=work_dir))
            logger.info("%s rows: naive reference (scratch %s)", f"{n_rows:,}", scratch)
            naive = run_naive(data_file, num_boost_round, max_depth, scratch, limit)
            if not keep_runs:
                shutil.rmtree(scratch, ignore_errors=True)
        results.append(SizeResult(n_rows, pipeline, naive, steps))

    logger.info("")
    logger.info(
        "num_boost_round=%d, max_depth=%d; ratios are pipeline / naive; RSS summed over the process tree",
        num_boost_round,
        max_depth,
    )
    logger.info("%s", markdown_table(table_rows(results, rss_limit_gb)))
    for result in results:
        log_steps(result)
    floor = measure_floor(work_dir, floor_repeats) if floor_repeats else None
    if floor is not None:
        logger.info("")
        logger.info(
            "shipped data (%d repeats, medians): pipeline %.2fs, start-up floor (%d x import mlflow) "
            "%.2fs, gap %.2fs (pipeline / floor = %.2f)",
            floor.repeats,
            floor.pipeline_s,
            FLOOR_PROCESSES,
            floor.floor_s,
            floor.gap_s,
            floor.pipeline_s / floor.floor_s,
        )
    settings = {
        "num_boost_round": num_boost_round,
        "max_depth": max_depth,
        "seed": seed,
        "rss_limit_gb": rss_limit_gb,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / GB, 1),
    }
    write_results(results, settings, rss_limit_gb, output, floor)
    logger.info("")
    logger.info("wrote %s and its .json and .csv", output)


if __name__ == "__main__":
    main()
