"""Wall time and per-process peak memory of the pipeline on the Dask engine, by data size.

    .venv/bin/python benchmarks/dask_scale.py [--rows 10000000,100000000,1000000000]

For each row count it generates (once, cached in --work-dir) a folder of Parquet parts of the
product's table (benchmarks/generate_data.py: 14 int8 flags and the label, ``part-00000.parquet``,
...), then runs the whole pipeline with ``-P engine=dask`` (an embedded LocalCluster: nothing is
started beforehand) and, up to --local-max-rows, with the local engine on the same rows, each as
``mlflow run . --env-manager local -P force=true`` against a fresh SQLite store. The local engine
reads the same folder if the project's loader accepts one, else one Parquet file of the same rows
(written once, cached beside the parts).

Every ~50 ms it samples each process of the command's tree and keeps each one's peak RSS with its
command line, so the report names the largest process (a dask worker, the driver, a step), plus
the peak of the tree's summed RSS (shared pages count once per process: an upper bound, what a
container's limit sees). A tree past --rss-limit-gb (summed), or a disk with less than
--min-free-disk-gb left, is killed and reported as such. A command that fails is reported with the
end of its stderr and the benchmark goes on to the next size.

It logs a table, the per-step breakdown from each run's tracking store (as benchmarks/scale.py
does) and each run's processes, and writes everything to --output (.json) and the table beside it
(.csv).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import click
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.generate_data import PART_ROWS, part_name, write_parquet_parts
from benchmarks.scale import (
    GB,
    MB,
    ProcessPeak,
    StepTiming,
    common_options,
    markdown_table,
    parse_rows,
    pipeline_steps,
    run_sampled,
    write_table_files,
)
from pystock_training.handoff import atomic_write
from tests.conftest import PROJECT_ROOT, subprocess_env

logger = logging.getLogger("dask_scale")

DEFAULT_ROWS: Final = (10_000_000, 100_000_000, 1_000_000_000)
DEFAULT_OUTPUT: Final = PROJECT_ROOT / "benchmarks" / "results" / "dask_scale.json"
DEFAULT_LOCAL_MAX_ROWS: Final = 100_000_000
SAMPLE_SECONDS: Final = 0.05
STDERR_TAIL_LINES: Final = 30
# The target: no single process of the dask run above this.
PROCESS_TARGET_BYTES: Final = 4 * GB
# Processes below this are left out of the per-process listings (shells, the resource tracker).
LISTED_PROCESS_BYTES: Final = 50 * MB
STEP_SCRIPTS: Final = ("main.py", "train_model.py", "evaluate_model.py", "register_model.py")


@dataclass(frozen=True)
class TreeMeasurement:
    """One measured command and every process it started.

    Attributes:
        wall_s: Seconds from start to exit (to the kill, if killed).
        peak_tree_rss_bytes: Highest summed RSS of the tree in any sample.
        processes: Each process's peak, largest first.
        status: ``ok``, ``failed`` (non-zero exit on its own), ``killed: rss`` or ``killed: disk``.
        returncode: The root process's exit status.
        disk_used_bytes: The most free disk space the run took (free before minus least free
            seen); other users of the disk move it too.
        stderr_tail: The last lines of stderr when the command failed.
    """

    wall_s: float
    peak_tree_rss_bytes: int
    processes: list[ProcessPeak]
    status: str
    returncode: int
    disk_used_bytes: int
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def largest(self) -> ProcessPeak | None:
        """The process with the highest peak RSS."""
        return self.processes[0] if self.processes else None


@dataclass
class EngineRun:
    """One engine at one row count: measured, or why not."""

    engine: str
    data_file: str
    measurement: TreeMeasurement | None = None
    steps: list[StepTiming] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    note: str = ""
    walls_s: list[float] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok``, ``failed``, ``killed: ...`` or ``not run``."""
        return "not run" if self.measurement is None else self.measurement.status


def representative(runs: Sequence[EngineRun]) -> EngineRun:
    """The repeat to report: the first that did not finish, else the one of median wall time.

    Its ``walls_s`` lists every repeat's wall time, in the order they ran.
    """
    walls = [run.measurement.wall_s for run in runs if run.measurement is not None]
    broken = [run for run in runs if run.status != "ok"]
    if broken:
        chosen = broken[0]
    else:
        by_wall = sorted(range(len(runs)), key=lambda index: walls[index])
        chosen = runs[by_wall[len(runs) // 2]]
    chosen.walls_s = walls
    return chosen


@dataclass
class SizeResult:
    """Both engines at one row count, on the same parts."""

    rows: int
    parts: int
    parts_bytes: int
    dask: EngineRun
    local: EngineRun

    @property
    def wall_ratio(self) -> float | None:
        """Dask wall time over local wall time, when both finished."""
        if self.dask.status != "ok" or self.local.status != "ok":
            return None
        assert self.dask.measurement is not None and self.local.measurement is not None
        return self.dask.measurement.wall_s / self.local.measurement.wall_s


def process_role(cmdline: Sequence[str], parent_role: str = "") -> str:
    """A short name for a process of the pipeline's tree, from its command line."""
    text = " ".join(cmdline)
    if "spawn_main" in text:
        # Dask's nannies start their workers with multiprocessing's spawn method.
        return f"dask worker ({parent_role})" if parent_role else "spawned process"
    if "resource_tracker" in text:
        return "resource tracker"
    if "forkserver" in text:
        return "forkserver"
    for arg in cmdline:
        name = Path(arg).name
        if name in STEP_SCRIPTS:
            return "main (driver)" if name == "main.py" else name.removesuffix(".py")
    if "mlflow" in cmdline and "run" in cmdline:
        return "mlflow run CLI"
    return Path(cmdline[0]).name if cmdline else "?"


def measure_tree(
    command: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    rss_limit_bytes: int | None = None,
    min_free_disk_bytes: int = 0,
    disk_path: Path | None = None,
) -> TreeMeasurement:
    """Run ``command`` with its stdout and stderr in ``cwd``, sampling each process of its tree.

    The tree is killed when its summed RSS passes ``rss_limit_bytes`` or the disk holding
    ``disk_path`` (default ``cwd``) has less than ``min_free_disk_bytes`` free.
    """
    disk_path = disk_path or cwd
    free_before = least_free = shutil.disk_usage(disk_path).free

    def stop(total: int) -> str | None:
        nonlocal least_free
        least_free = min(least_free, shutil.disk_usage(disk_path).free)
        if rss_limit_bytes is not None and total > rss_limit_bytes:
            return "killed: rss"
        return "killed: disk" if least_free < min_free_disk_bytes else None

    run = run_sampled(command, cwd=cwd, env=env, stop=stop, sample_seconds=SAMPLE_SECONDS)
    status = run.stopped or ("failed" if run.returncode != 0 else "ok")
    tail = []
    if status != "ok":
        tail = run.stderr_path.read_text(errors="replace").splitlines()[-STDERR_TAIL_LINES:]
    return TreeMeasurement(
        wall_s=run.wall_s,
        peak_tree_rss_bytes=run.sampler.peak_tree,
        processes=with_roles(run.sampler.processes()),
        status=status,
        returncode=run.returncode,
        disk_used_bytes=max(0, free_before - least_free),
        stderr_tail=tail,
    )


def with_roles(peaks: list[ProcessPeak]) -> list[ProcessPeak]:
    """``peaks`` with each one's role (``process_role``) filled in."""
    by_pid = {peak.pid: peak for peak in peaks}
    for peak in peaks:
        parent = by_pid.get(peak.ppid)
        parent_role = process_role(parent.cmdline.split()) if parent else ""
        own = process_role(peak.cmdline.split(), parent_role)
        # A forked helper keeps its parent's command line (the driver forks one, for instance).
        peak.role = f"{own} (fork)" if parent and parent.cmdline == peak.cmdline else own
    return peaks


def parts_for(work_dir: Path, n_rows: int, seed: int, part_rows: int) -> Path:
    """The folder of Parquet parts for ``n_rows``, generated once and reused by later runs."""
    directory = work_dir / "data" / f"parts-{n_rows}-seed{seed}-by{part_rows}"
    expected = [part_name(index) for index in range(math.ceil(n_rows / part_rows))]
    # The generator renames a finished folder into place, so a folder with the right names is whole.
    if directory.is_dir() and sorted(path.name for path in directory.iterdir()) == expected:
        logger.info("reusing %s", directory)
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    started = time.monotonic()
    write_parquet_parts(directory, n_rows, seed=seed, part_rows=part_rows)
    logger.info(
        "generated %s (%d parts, %.2f GB) in %.1fs",
        directory,
        len(expected),
        folder_bytes(directory) / GB,
        time.monotonic() - started,
    )
    return directory


def folder_bytes(directory: Path) -> int:
    """Bytes of the files in ``directory`` (not recursive)."""
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())


def single_file_for(parts: Path) -> Path:
    """One Parquet file of the parts' rows, beside them, written once (row group by row group)."""
    import pyarrow.parquet as pq

    path = parts.with_name(parts.name + ".parquet")
    if path.is_file():
        logger.info("reusing %s", path)
        return path
    sources = sorted(parts.glob("part-*.parquet"))
    schema = pq.read_schema(sources[0])
    with atomic_write(path) as handle, pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        for source in sources:
            reader = pq.ParquetFile(source)
            for group in range(reader.num_row_groups):
                writer.write_table(reader.read_row_group(group))
    logger.info("wrote %s (%.2f GB)", path, path.stat().st_size / GB)
    return path


def loader_reads_folders(work_dir: Path) -> bool:
    """Whether the local engine's loader accepts a folder of Parquet parts (tried on a small one)."""
    from pystock_training.errors import DataError

    try:
        from pystock_training.data.parts import load_parts
    except ImportError:  # a project without partitioned input: its loader takes single files
        return False
    probe = work_dir / "data" / "probe-parts"
    if not probe.is_dir():
        write_parquet_parts(probe, 300, part_rows=100)
    try:
        return load_parts(probe).n_rows == 300
    except (DataError, OSError, ValueError, TypeError):
        return False


def run_engine(
    engine: str,
    data_file: Path,
    *,
    work_dir: Path,
    num_boost_round: int,
    max_depth: int,
    rss_limit_bytes: int,
    min_free_disk_bytes: int,
    keep_runs: bool,
) -> EngineRun:
    """One measured ``mlflow run`` of the whole pipeline on ``engine``, against a fresh store."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=work_dir))
    tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local"]
    for name, value in (
        ("engine", engine),
        ("data_file", data_file),
        ("num_boost_round", num_boost_round),
        ("max_depth", max_depth),
        ("force", "true"),
    ):
        command += ["-P", f"{name}={value}"]
    logger.info("%s engine on %s (scratch %s)", engine, data_file, scratch)
    run = EngineRun(engine, str(data_file))
    try:
        run.measurement = measure_tree(
            command,
            cwd=scratch,
            env=subprocess_env(tracking_uri),
            rss_limit_bytes=rss_limit_bytes,
            min_free_disk_bytes=min_free_disk_bytes,
        )
        if not run.measurement.status.startswith("killed"):
            run.steps = pipeline_steps(tracking_uri)
            run.tags = run_tags(tracking_uri)
    finally:
        if keep_runs:
            logger.info("kept %s", scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    describe(run)
    return run


def run_tags(tracking_uri: str) -> dict[str, str]:
    """The ``pystock.*`` tags of the pipeline run and its train run (the engine, its workers)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    tags: dict[str, str] = {}
    for run in client.search_runs(experiments, max_results=1000):
        entry_point = run.data.tags.get("mlflow.project.entryPoint", "")
        if entry_point in ("main", "train_model"):
            prefix = "" if entry_point == "main" else "train_model."
            tags |= {prefix + k: v for k, v in run.data.tags.items() if k.startswith("pystock.")}
    return tags


def describe(run: EngineRun) -> None:
    """Log a run's outcome, its largest processes and, when it failed, the end of its stderr."""
    measurement = run.measurement
    if measurement is None:
        logger.info("  %s engine: not run (%s)", run.engine, run.note)
        return
    logger.info(
        "  %s engine: %s in %.1fs, tree peak %.0f MB, disk used up to %.2f GB",
        run.engine,
        measurement.status,
        measurement.wall_s,
        measurement.peak_tree_rss_bytes / MB,
        measurement.disk_used_bytes / GB,
    )
    for proc in measurement.processes:
        if proc.peak_rss_bytes >= LISTED_PROCESS_BYTES:
            logger.info("    %8.0f MB  pid %-7d %s", proc.peak_rss_bytes / MB, proc.pid, proc.role)
    for line in measurement.stderr_tail:
        logger.info("    | %s", line)


def local_not_run_note(results: Sequence[SizeResult], n_rows: int, local_max_rows: int) -> str:
    """Why the local engine was not run at ``n_rows``, extrapolated from its largest measured run."""
    measured = [
        r for r in results if r.local.status == "ok" and r.local.measurement and r.local.measurement.largest
    ]
    reason = f"above --local-max-rows {local_max_rows:,}"
    if not measured:
        return reason
    biggest = max(measured, key=lambda r: r.rows)
    assert biggest.local.measurement is not None and biggest.local.measurement.largest is not None
    largest = biggest.local.measurement.largest
    scaled = largest.peak_rss_bytes * n_rows / biggest.rows
    return (
        f"{reason}: at {biggest.rows:,} rows its largest process ({largest.role}) peaked at "
        f"{largest.peak_rss_bytes / GB:.1f} GB; the local engine holds the whole int8 matrix, its "
        f"codes and the inverse index, all linear in the rows, so about {scaled / GB:.0f} GB at "
        f"{n_rows:,} rows (an extrapolation), against {psutil.virtual_memory().total / GB:.1f} GB here"
    )


def _wall(run: EngineRun) -> str:
    if run.measurement is None:
        return "not run"
    if run.status == "ok":
        return f"{run.measurement.wall_s:.1f}"
    return f"{run.status} after {run.measurement.wall_s:.1f}"


def _largest(run: EngineRun) -> str:
    largest = run.measurement.largest if run.measurement else None
    if largest is None:
        return "-"
    return f"{largest.peak_rss_bytes / MB:.0f} ({largest.role})"


def _tree(run: EngineRun) -> str:
    return "-" if run.measurement is None else f"{run.measurement.peak_tree_rss_bytes / MB:.0f}"


def _over_target(run: EngineRun) -> str:
    largest = run.measurement.largest if run.measurement else None
    if largest is None:
        return "-"
    return "yes" if largest.peak_rss_bytes > PROCESS_TARGET_BYTES else "no"


def table_rows(results: Sequence[SizeResult]) -> list[list[str]]:
    """The result table as text cells, header first: one line per row count."""
    header = [
        "rows",
        "dask wall s",
        "local wall s",
        "wall ratio dask/local",
        "dask largest process MB",
        "local largest process MB",
        "dask tree peak MB",
        "local tree peak MB",
        "dask process > 4 GB",
    ]
    cells = [header]
    for result in results:
        ratio = result.wall_ratio
        cells.append(
            [
                f"{result.rows:,}",
                _wall(result.dask),
                _wall(result.local),
                "-" if ratio is None else f"{ratio:.2f}",
                _largest(result.dask),
                _largest(result.local),
                _tree(result.dask),
                _tree(result.local),
                _over_target(result.dask),
            ]
        )
    return cells


def csv_records(results: Sequence[SizeResult]) -> list[dict[str, object]]:
    """One flat record per row count and engine, numbers only (empty where not measured)."""
    records: list[dict[str, object]] = []
    for result in results:
        for run in (result.dask, result.local):
            m = run.measurement
            largest = m.largest if m else None
            records.append(
                {
                    "rows": result.rows,
                    "engine": run.engine,
                    "status": run.status,
                    "wall_s": "" if m is None else round(m.wall_s, 3),
                    "largest_process_rss_mb": "" if largest is None else round(largest.peak_rss_bytes / MB),
                    "largest_process": "" if largest is None else largest.role,
                    "tree_peak_rss_mb": "" if m is None else round(m.peak_tree_rss_bytes / MB),
                    "any_process_over_4gb": ""
                    if largest is None
                    else largest.peak_rss_bytes > PROCESS_TARGET_BYTES,
                    "wall_ratio_dask_local": "" if result.wall_ratio is None else round(result.wall_ratio, 3),
                    "disk_used_gb": "" if m is None else round(m.disk_used_bytes / GB, 2),
                    "data_parts": result.parts,
                    "data_gb": round(result.parts_bytes / GB, 3),
                }
            )
    return records


def write_results(results: Sequence[SizeResult], settings: dict[str, object], output: Path) -> None:
    """Everything to ``output`` (.json), the table beside it (.csv)."""
    payload = {
        "settings": settings,
        "results": [
            asdict(result)
            | {"wall_ratio_dask_local": result.wall_ratio}
            | {
                kind: asdict(run) | {"status": run.status}
                for kind, run in (("dask", result.dask), ("local", result.local))
            }
            for result in results
        ],
    }
    write_table_files(output, payload, csv_records(results))


def log_steps(rows: int, run: EngineRun) -> None:
    """The run's per-step durations and timing_* metrics, from its tracking store."""
    if not run.steps:
        return
    logger.info("")
    logger.info("%s engine at %s rows, per step (tracking store):", run.engine, f"{rows:,}")
    for step in run.steps:
        duration = "?" if step.duration_s is None else f"{step.duration_s:7.2f}s"
        timings = ", ".join(f"{key} {value:.2f}" for key, value in step.timings.items())
        logger.info(
            "  %-16s %s%s", step.entry_point or step.name, duration, f"  {timings}" if timings else ""
        )


@click.command()
@common_options(DEFAULT_ROWS, "parts")
@click.option("--part-rows", type=click.IntRange(min=1), default=PART_ROWS, show_default=True)
@click.option(
    "--local-max-rows",
    type=click.IntRange(min=0),
    default=DEFAULT_LOCAL_MAX_ROWS,
    show_default=True,
    help="Run the local engine only up to this many rows (it holds the whole table in memory).",
)
@click.option(
    "--local-input",
    type=click.Choice(["auto", "parts", "file"]),
    default="auto",
    show_default=True,
    help="The local engine's input: the parts folder, one Parquet file of the same rows, or the "
    "folder if the loader accepts one.",
)
@click.option(
    "--min-free-disk-gb",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="Kill a measured run when the work dir's disk has less than this free.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_OUTPUT,
    show_default=True,
    help="JSON to write; the table goes beside it as .csv.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs of each engine, alternated, at the sizes both engines run (the median is reported).",
)
@click.option("--keep-runs", is_flag=True, help="Keep each run's scratch folder (tracking store, logs).")
def main(
    rows_values: tuple[str, ...],
    part_rows: int,
    num_boost_round: int,
    max_depth: int,
    seed: int,
    local_max_rows: int,
    local_input: str,
    work_dir: Path,
    rss_limit_gb: float,
    min_free_disk_gb: float,
    output: Path,
    repeats: int,
    keep_runs: bool,
) -> None:
    """The pipeline on the dask engine (and the local one) on Parquet parts, at several sizes."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    row_counts = parse_rows(rows_values)
    work_dir = work_dir.expanduser().resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if local_input == "auto" and any(n <= local_max_rows for n in row_counts):
        local_input = "parts" if loader_reads_folders(work_dir) else "file"
        logger.info("the local engine reads %s", "the parts folder" if local_input == "parts" else "one file")
    run = functools.partial(
        run_engine,
        work_dir=work_dir,
        num_boost_round=num_boost_round,
        max_depth=max_depth,
        rss_limit_bytes=math.floor(rss_limit_gb * GB),
        min_free_disk_bytes=math.floor(min_free_disk_gb * GB),
        keep_runs=keep_runs,
    )
    settings = {
        "part_rows": part_rows,
        "num_boost_round": num_boost_round,
        "max_depth": max_depth,
        "seed": seed,
        "local_max_rows": local_max_rows,
        "local_input": local_input,
        "repeats": repeats,
        "rss_limit_gb": rss_limit_gb,
        "min_free_disk_gb": min_free_disk_gb,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / GB, 1),
    }
    results: list[SizeResult] = []
    for n_rows in row_counts:
        parts = parts_for(work_dir, n_rows, seed, part_rows)
        logger.info("%s rows", f"{n_rows:,}")
        if n_rows <= local_max_rows:
            local_file = parts if local_input == "parts" else single_file_for(parts)
            dask_runs, local_runs = [], []
            # Alternated, so both engines see the same spells of load on a shared machine.
            for _ in range(repeats):
                dask_runs.append(run("dask", parts))
                local_runs.append(run("local", local_file))
            dask, local = representative(dask_runs), representative(local_runs)
        else:
            dask = representative([run("dask", parts)])
            local = EngineRun("local", "", note=local_not_run_note(results, n_rows, local_max_rows))
            describe(local)
        n_parts = len(list(parts.glob("part-*.parquet")))
        results.append(SizeResult(n_rows, n_parts, folder_bytes(parts), dask, local))
        # Written after every size: a later size that runs for an hour leaves the earlier ones on disk.
        write_results(results, settings, output)

    logger.info("")
    logger.info(
        "num_boost_round=%d, max_depth=%d; MB of RSS; ratio = dask / local; medians of %d where both ran",
        num_boost_round,
        max_depth,
        repeats,
    )
    logger.info("%s", markdown_table(table_rows(results)))
    for result in results:
        log_steps(result.rows, result.dask)
        log_steps(result.rows, result.local)
        if result.local.note:
            logger.info("")
            logger.info("local engine at %s rows: not run, %s", f"{result.rows:,}", result.local.note)
    logger.info("")
    logger.info("wrote %s and its .csv", output)


if __name__ == "__main__":
    main()
