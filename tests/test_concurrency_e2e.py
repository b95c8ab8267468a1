"""Concurrent pipelines on one registry: four `mlflow run .` at once, on SQLite and on the server.

MLflow has no compare-and-set on aliases, so register_model moves ``@champion`` under a lock
taken through the tracking server (pystock_training/lock.py). Whatever the interleaving, every
pipeline must end cleanly with its own version, and the promoted versions must form one chain
through ``pystock.replaced_version`` ending at ``@champion``: two promotions that both replaced
the same champion (the read-then-write race) would leave one of them off the chain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from pystock_training import config
from pystock_training.lock import lock_name
from tests.conftest import PROJECT_ROOT, signal_frame, subprocess_env
from tests.test_server_e2e import backend, server  # noqa: F401 - module fixtures: PostgreSQL + server

pytestmark = pytest.mark.slow

logger = logging.getLogger(__name__)

N_PIPELINES = 4
# Four pipelines at once on two cores took 70-80 s here; the margin is for busier CI machines.
TIMEOUT_S = 600
PIPELINE_PARAMS = ("-P", "num_boost_round=30", "-P", "early_stopping_rounds=10")


@dataclass(frozen=True)
class Pipeline:
    """One finished `mlflow run`: its exit code, wall time and combined output."""

    index: int
    returncode: int | None
    wall_s: float
    output: str


def run_concurrently(cwd: Path, tracking_uri: str, data_files: list[Path]) -> list[Pipeline]:
    """Start one `mlflow run` per data file at the same moment; wait for all of them.

    Each runs in its own process group, killed whole if it outlives TIMEOUT_S or the test fails,
    so a hung pipeline cannot keep training on a shared machine.
    """
    env = subprocess_env(tracking_uri)
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local"]
    processes: list[subprocess.Popen[bytes]] = []
    logs = [cwd / f"pipeline-{index}.log" for index in range(len(data_files))]
    ended: dict[int, float] = {}
    started = time.monotonic()
    try:
        for data_file, log in zip(data_files, logs, strict=True):
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [*command, "-P", f"data_file={data_file}", *PIPELINE_PARAMS],
                        cwd=cwd,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = started + TIMEOUT_S
        for index, process in enumerate(processes):
            # In start order: a pipeline that ended earlier is seen when its turn comes, so its
            # time is an upper bound (logged only, never asserted).
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0))
                ended[index] = time.monotonic() - started
    finally:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return [
        Pipeline(
            index, process.returncode if index in ended else None, ended.get(index, -1.0), log.read_text()
        )
        for index, (process, log) in enumerate(zip(processes, logs, strict=True))
    ]


def assert_single_chain(client: MlflowClient, model_name: str) -> list[str]:
    """The promoted versions from ``@champion`` back through ``pystock.replaced_version``.

    Asserts that the walk ends at ``none`` and visits every promoted version exactly once, so
    no two promotions replaced the same version and none was lost between them.
    """
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{model_name}'")}
    promoted = {number for number, v in versions.items() if v.tags.get(config.TAG_DECISION) == "promoted"}
    tags = {number: dict(v.tags) for number, v in versions.items() if number in promoted}
    try:
        head: str | None = str(client.get_model_version_by_alias(model_name, config.ALIAS_CHAMPION).version)
    except MlflowException:
        head = None
    chain: list[str] = []
    current = head
    while current is not None and current != "none":
        assert current not in chain, f"the chain loops back to {current}: {chain}; promoted tags {tags}"
        assert current in promoted, (
            f"version {current} is on the chain {[*chain, current]} but was not promoted; "
            f"promoted tags {tags}"
        )
        chain.append(current)
        current = versions[current].tags.get(config.TAG_REPLACED_VERSION)
        assert current is not None, (
            f"promoted version {chain[-1]} has no {config.TAG_REPLACED_VERSION} tag; chain so far {chain}"
        )
    replacers: dict[str, list[str]] = {}
    for number in sorted(promoted, key=int):
        replacers.setdefault(tags[number].get(config.TAG_REPLACED_VERSION, "?"), []).append(number)
    shared = {replaced: by for replaced, by in replacers.items() if len(by) > 1}
    assert set(chain) == promoted, (
        f"chain from @champion {' -> '.join([*chain, 'none'])} misses promoted versions "
        f"{sorted(promoted - set(chain), key=int)}; replaced by more than one promotion: {shared}; "
        f"promoted tags {tags}"
    )
    return chain


def register_overlap(runs: list) -> int:
    """The most register_model runs that were open at the same moment."""
    events = sorted(
        (moment, delta)
        for run in runs
        if run.data.tags.get("mlflow.project.entryPoint") == "register_model"
        for moment, delta in ((run.info.start_time, 1), (run.info.end_time, -1))
    )
    most = open_now = 0
    for _, delta in events:
        open_now += delta
        most = max(most, open_now)
    return most


def check_concurrent_pipelines(
    tmp_path: Path, tracking_uri: str, model_name: str = config.MODEL_NAME
) -> list[str]:
    """Run the four pipelines and hold the outcome to the contract; returns the chain seen."""
    data_files = []
    for index in range(N_PIPELINES):
        # A different file each: different run keys, so no pipeline is skipped.
        path = tmp_path / f"data-{index}.csv"
        signal_frame(600, seed=index).to_csv(path, header=False, index=False)
        data_files.append(path)

    started = time.monotonic()
    pipelines = run_concurrently(tmp_path, tracking_uri, data_files)
    wall = time.monotonic() - started
    for pipeline in pipelines:
        assert pipeline.returncode == 0, (
            f"pipeline {pipeline.index} exited {pipeline.returncode} after {pipeline.wall_s:.0f}s "
            f"(None: killed at {TIMEOUT_S}s):\n{pipeline.output[-4000:]}"
        )

    client = MlflowClient(tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiment_ids, run_view_type=ViewType.ALL, max_results=1000)
    unfinished = [
        (run.data.tags.get("mlflow.project.entryPoint"), run.info.run_id, run.info.status)
        for run in runs
        if run.info.status != "FINISHED"
    ]
    assert not unfinished, f"runs not FINISHED: {unfinished}"
    assert len(runs) == 4 * N_PIPELINES, [run.data.tags.get("mlflow.project.entryPoint") for run in runs]

    parents = [run for run in runs if run.data.tags.get("mlflow.project.entryPoint") == "main"]
    assert len(parents) == N_PIPELINES
    decisions = {
        run.data.tags.get(config.TAG_MODEL_VERSION): (
            run.data.tags.get(config.TAG_DECISION),
            run.data.tags.get(config.TAG_VERDICT),
        )
        for run in parents
    }
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{model_name}'")}
    # Every pipeline registered its own version, and nothing else did.
    assert sorted(versions, key=int) == [str(n) for n in range(1, N_PIPELINES + 1)], sorted(versions)
    assert sorted(decisions, key=str) == sorted(versions), decisions
    assert {decision for decision, _ in decisions.values()} <= {"promoted", "rejected"}, decisions

    chain = assert_single_chain(client, model_name)
    seen = " -> ".join([*chain, "none"])
    # No champion existed before: whoever took the lock first was compared with none and promoted.
    assert chain, f"no version was promoted: {decisions}"
    for number, version in versions.items():
        tags = version.tags
        assert tags.get(config.TAG_DECISION) == decisions[number][0], (number, tags, decisions, seen)
        assert tags.get(config.TAG_VERDICT) == decisions[number][1], (number, tags, decisions, seen)
        if "champion moved from" in (version.description or ""):
            # The champion moved under it: not a verdict on the model, the next run retries.
            assert tags[config.TAG_DECISION] == "rejected", (number, tags, seen)
            assert tags[config.TAG_VERDICT] == "retry", (number, tags, seen)
        if tags.get(config.TAG_DECISION) == "promoted":
            # compare-and-set: a promotion replaced exactly the champion train_model compared it
            # with, never one that appeared meanwhile.
            train = client.get_run(version.run_id)
            compared = train.data.tags.get(config.TAG_CHAMPION_VERSION) or "none"
            assert tags[config.TAG_REPLACED_VERSION] == compared, (number, compared, tags, seen)

    # The lock (and any tombstone of a broken one) is gone: only the real model is registered.
    names = sorted(model.name for model in client.search_registered_models())
    assert names == [model_name], f"left in the registry: {names} (lock {lock_name(model_name)})"

    walls = ", ".join(f"{p.wall_s:.0f}s" for p in pipelines)
    # For the record (pytest -o log_cli=true shows it): what this interleaving produced.
    logger.info(
        "chain %s; decisions %s; %d register steps open at once at most; wall %.0fs (pipelines %s)",
        seen,
        dict(sorted(decisions.items(), key=lambda item: int(item[0]))),
        register_overlap(runs),
        wall,
        walls,
    )
    return chain


def test_four_concurrent_pipelines_on_one_sqlite_store(tmp_path, tracking_uri) -> None:
    # The store exists before the pipelines start, as in production: this is about the
    # promotion race, not four processes creating one SQLite schema at once.
    MlflowClient(tracking_uri).search_experiments()
    check_concurrent_pipelines(tmp_path, tracking_uri)


def test_four_concurrent_pipelines_on_the_postgresql_server(server, tmp_path) -> None:  # noqa: F811
    check_concurrent_pipelines(tmp_path, server.uri)


@pytest.mark.parametrize(
    ("replaced", "expected"),
    [
        # Each promotion replaced the one before: one chain.
        ({"1": "none", "2": "1", "3": "2"}, ["3", "2", "1"]),
        # A read-then-write race: 2 and 3 both compared with 1 and both moving the alias; 3
        # wins, and 2 is champion for a moment that no record shows.
        (
            {"1": "none", "2": "1", "3": "1"},
            re.escape("['2']; replaced by more than one promotion: {'1': ['2', '3']}"),
        ),
        # Two pipelines that both found no champion.
        (
            {"1": "none", "2": "none"},
            re.escape("['1']; replaced by more than one promotion: {'none': ['1', '2']}"),
        ),
    ],
    ids=["one-chain", "two-replaced-1", "two-replaced-none"],
)
def test_the_chain_check_catches_two_promotions_of_one_champion(
    replaced, expected, tmp_path, tracking_uri
) -> None:
    client = MlflowClient(tracking_uri)
    client.create_registered_model(config.MODEL_NAME)
    for number, previous in replaced.items():
        client.create_model_version(
            config.MODEL_NAME,
            str(tmp_path / number),
            tags={config.TAG_DECISION: "promoted", config.TAG_REPLACED_VERSION: previous},
        )
        client.set_registered_model_alias(config.MODEL_NAME, config.ALIAS_CHAMPION, number)
    if isinstance(expected, list):
        assert assert_single_chain(client, config.MODEL_NAME) == expected
    else:
        with pytest.raises(AssertionError, match=expected):
            assert_single_chain(client, config.MODEL_NAME)
