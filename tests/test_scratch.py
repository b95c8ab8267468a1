"""Scratch space for the predictions hand-off: private per run, checked when read, never left behind.

The permission tests run the steps as two accounts on one ``$TMPDIR``: root without
CAP_DAC_OVERRIDE (which root otherwise uses to walk past every mode bit) and ``nobody``. The disk
full tests give the steps a real 64 KB tmpfs, mounted in a private mount namespace
(``unshare --mount``) so that nothing outlives the command even if the test dies.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from pystock_training import config
from pystock_training.errors import DataError
from pystock_training.lock import TAG_HOLDER, TAG_TOKEN, lock_name
from pystock_training.scratch import make_scratch_dir, predictions_path, scratch_dir
from pystock_training.steps.evaluate_model import evaluate_model
from pystock_training.steps.train_model import train_model
from tests.conftest import PROJECT_ROOT, poll_until, process_group, signal_frame, subprocess_env

NOBODY = 65534
WITHOUT_DAC = (
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
)
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
# A tiny model's test set, trained fast; deep unstopped trees make a model far above 64 KB.
QUICK = ("--num-boost-round", "20")
BIG_MODEL = ("--num-boost-round", "300", "--max-depth", "8", "--early-stopping-rounds", "0")

needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or os.geteuid() != 0,
    reason="needs setpriv (util-linux) and root to run the steps as two accounts",
)


def scratch_leftovers(tmpdir: Path) -> list[str]:
    """What the pipeline could have left in TMPDIR: scratch folders and predictions files."""
    return sorted(
        str(path.relative_to(tmpdir))
        for path in tmpdir.rglob("*")
        if path.name.startswith(("pystock-", "pystock_")) or path.name == config.PREDICTIONS_FILE_NAME
    )


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line]


# --- the scratch folder itself ---------------------------------------------------------------


def test_scratch_folders_are_private_and_new_each_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir caches TMPDIR
    old_umask = os.umask(0)  # a umask must not widen (or, at 0o777, empty) the mode
    try:
        first, second = make_scratch_dir(), make_scratch_dir()
    finally:
        os.umask(old_umask)
    assert first != second
    assert first.parent == second.parent == tmp_path
    assert first.name.startswith("pystock-") and first.name != "pystock-training"
    for folder in (first, second):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert folder.stat().st_uid == os.geteuid()


def test_scratch_folder_is_removed_on_error_and_interrupt(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    for raised in (RuntimeError("step failed"), KeyboardInterrupt("terminated by SIGTERM")):
        with pytest.raises(type(raised)), scratch_dir() as folder:
            (folder / "predictions.csv").write_text("y_test\n")
            raise raised
        assert not folder.exists()
    # A standalone train_model that fails removes the folder it made; one that succeeds keeps it.
    with pytest.raises(RuntimeError), predictions_path(None) as path:
        path.write_text("y_test\n")
        raise RuntimeError("log_model failed")
    assert not path.parent.exists()
    with predictions_path(None) as kept:
        kept.write_text("y_test\n")
    assert kept.exists() and stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert list(tmp_path.iterdir()) == [kept.parent]


# --- two accounts, one TMPDIR ----------------------------------------------------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-writable sticky TMPDIR like /tmp, outside pytest's root-only tmp_path."""
    base = Path(tempfile.mkdtemp(prefix="pystock-test-accounts-", dir="/tmp"))
    base.chmod(0o755)
    tmpdir = base / "tmp"
    tmpdir.mkdir()
    tmpdir.chmod(0o1777)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def account_home(base: Path, name: str, uid: int) -> Path:
    """A working folder with its own tracking store and data, owned by the account."""
    home = base / name
    home.mkdir()
    signal_frame(n_rows=300).to_csv(home / "data.csv", header=False, index=False)
    for path in (home, home / "data.csv"):
        os.chown(path, uid, uid)
    return home


def run_train_as(prefix: tuple[str, ...], home: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(f"sqlite:///{home / 'mlflow.db'}") | {"TMPDIR": str(tmpdir), "HOME": str(home)}
    return subprocess.run(
        [*prefix, sys.executable, str(PROJECT_ROOT / "train_model.py"), "--data-file", "data.csv", *QUICK],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def predictions_of(home: Path) -> Path:
    (run,) = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").search_runs(["0"])
    assert run.info.status == "FINISHED"
    return Path(run.data.tags[config.TAG_PREDICTIONS_FILE])


@pytest.mark.slow
@needs_setpriv
def test_two_accounts_on_one_tmpdir_train_without_interfering(shared_tmp: Path) -> None:
    tmpdir = shared_tmp / "tmp"
    root_home = account_home(shared_tmp, "root", 0)
    nobody_home = account_home(shared_tmp, "nobody", NOBODY)

    # Root first: with a shared $TMPDIR/pystock-training, root would own it and nobody's
    # run would fail writing into it after training.
    first = run_train_as(WITHOUT_DAC, root_home, tmpdir)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train_as(AS_NOBODY, nobody_home, tmpdir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Traceback" not in second.stderr

    root_file, nobody_file = predictions_of(root_home), predictions_of(nobody_home)
    assert root_file.parent != nobody_file.parent
    for path, uid in ((root_file, 0), (nobody_file, NOBODY)):
        folder = path.parent
        assert folder.parent == tmpdir
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert folder.stat().st_uid == uid
    # Neither account can read, or put a file into, the other's folder.
    for prefix, other in ((AS_NOBODY, root_file), (WITHOUT_DAC, nobody_file)):
        read = subprocess.run([*prefix, "cat", str(other)], capture_output=True, text=True, check=False)
        assert read.returncode != 0 and "Permission denied" in read.stderr
        write = subprocess.run(
            [*prefix, "touch", str(other.parent / "planted.csv")], capture_output=True, text=True, check=False
        )
        assert write.returncode != 0 and "Permission denied" in write.stderr


# --- evaluate reads only the file train_model wrote ------------------------------------------


@pytest.mark.slow
def test_a_tampered_predictions_file_is_refused_in_one_line(
    tmp_path: Path, tracking_uri: str, signal_csv
) -> None:
    predictions = tmp_path / "predictions.csv"
    trained = train_model(data_file=signal_csv, predictions_file=predictions, num_boost_round=20)
    client = MlflowClient(tracking_uri)
    recorded = client.get_run(trained.run_id).data.tags[config.TAG_PREDICTIONS_SHA256]
    assert len(recorded) == 64

    # The file as written passes, and the evaluate run says which digest it checked.
    evaluate_model(predictions_file=predictions, model_uri=trained.model_uri)
    (evaluated,) = client.search_runs(["0"], filter_string="tags.`mlflow.runName` = 'evaluate_model'")
    assert evaluated.data.tags[config.TAG_PREDICTIONS_SHA256] == recorded

    # Someone replaces it with a valid-looking file that flatters the model.
    frame = pd.read_csv(predictions)
    frame["y_pred"] = frame["y_test"]
    frame["y_proba"] = frame["y_test"].astype(float)
    frame.to_csv(predictions, index=False)
    with pytest.raises(DataError, match="changed since train_model wrote it"):
        evaluate_model(predictions_file=predictions, model_uri=trained.model_uri)

    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "evaluate_model.py"),
            "--predictions-file",
            str(predictions),
            "--model-uri",
            trained.model_uri,
        ],
        cwd=tmp_path,
        env=subprocess_env(tracking_uri),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert f"{predictions}: changed since train_model wrote it" in line
    assert f"the train run recorded {recorded[:12]}" in line
    # Nothing was scored from it.
    failed = [run for run in client.search_runs(["0"]) if run.info.status == "FAILED"]
    assert failed and all("roc_auc" not in run.data.metrics for run in failed)


# --- no scratch left on any way out ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_pipeline_leaves_no_scratch(
    tmp_path: Path, tracking_uri: str, signal_csv, sig
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    client = MlflowClient(tracking_uri)
    # Another pipeline holds the promotion lock: register_model waits for it, after train and
    # evaluate are done and the predictions are on disk, for as long as the test needs.
    client.create_registered_model(
        lock_name(config.MODEL_NAME), tags={TAG_TOKEN: "other", TAG_HOLDER: "other"}
    )
    # The driver itself (`python main.py`), so the signal reaches exactly it.
    command = [sys.executable, str(PROJECT_ROOT / "main.py"), "--data-file", str(signal_csv), *QUICK]
    env = subprocess_env(tracking_uri) | {"TMPDIR": str(tmpdir)}
    with process_group(command, tmp_path, env) as pipeline:

        def registering() -> bool | None:
            runs = client.search_runs(
                ["0"],
                filter_string="attributes.status = 'RUNNING' and tags.`mlflow.runName` = 'register_model'",
            )
            return True if runs else None

        poll_until(registering, timeout=300, what="register_model waiting for the lock")
        assert scratch_leftovers(tmpdir), "the predictions should be on disk while the pipeline runs"
        os.kill(pipeline.pid, sig)
        output = pipeline.communicate(timeout=120)[0]
    assert pipeline.returncode != 0, output[-2000:]
    assert scratch_leftovers(tmpdir) == [], output[-2000:]
    # The logged artifact is what stays.
    (train,) = client.search_runs(["0"], filter_string="tags.`mlflow.runName` = 'train_model'")
    artifacts = [
        item.path for item in client.list_artifacts(train.info.run_id, config.PREDICTIONS_ARTIFACT_DIR)
    ]
    assert artifacts == [f"{config.PREDICTIONS_ARTIFACT_DIR}/{config.PREDICTIONS_FILE_NAME}"]


# --- disk full: one line naming the path -----------------------------------------------------


def on_small_tmpfs(mount_point: Path, listing: Path, command: list[str]) -> list[str]:
    """``command`` with a 64 KB tmpfs at ``mount_point``, seen by it alone; its content after the
    command ends is written to ``listing`` (the tmpfs vanishes with the namespace)."""
    script = (
        'mount -t tmpfs -o size=64k,mode=1777 tmpfs "$1" || exit 97; mp=$1; out=$2; shift 2; '
        '"$@"; rc=$?; find "$mp" -mindepth 1 > "$out"; exit $rc'
    )
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
            str(mount_point), str(listing), *command]  # fmt: skip


def run_on_small_tmpfs(
    tmp_path: Path, tracking_uri: str, command: list[str], *, tmpdir_on_it: bool
) -> tuple[subprocess.CompletedProcess[str], Path, list[str]]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    listing = tmp_path / "listing.txt"
    env = subprocess_env(tracking_uri)
    if tmpdir_on_it:
        env["TMPDIR"] = str(mount_point)
    result = subprocess.run(
        on_small_tmpfs(mount_point, listing, command),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode == 97 or "unshare failed" in result.stderr:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {result.stderr.strip()[:200]}")
    left = listing.read_text().split() if listing.exists() else []
    return result, mount_point, left


needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root to mount a tmpfs"
)


@pytest.mark.slow
@needs_unshare
def test_an_empty_64k_tmpdir_is_one_line_naming_it(tmp_path: Path, tracking_uri: str, signal_csv) -> None:
    command = [
        sys.executable,
        str(PROJECT_ROOT / "train_model.py"),
        "--data-file",
        str(signal_csv),
        *BIG_MODEL,
    ]
    result, tmpdir, left = run_on_small_tmpfs(tmp_path, tracking_uri, command, tmpdir_on_it=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert line.endswith(f"train_model failed: {tmpdir}: no space left on device (or a quota or file size "
                         "limit) while XGBoost saved the model there; free space there or set TMPDIR to a "
                         "larger filesystem")  # fmt: skip
    # The step's own scratch folder went with the failure.
    assert [name for name in left if "pystock-" in name] == []
    (run,) = MlflowClient(tracking_uri).search_runs(["0"])
    assert run.info.status == "FAILED"
    assert run.data.tags[config.TAG_ERROR] == line.partition("train_model failed: ")[2]


@pytest.mark.slow
@needs_unshare
def test_a_predictions_file_on_a_full_disk_is_one_line_naming_it(tmp_path: Path, tracking_uri: str) -> None:
    data = tmp_path / "data.csv"
    # About 2,000 test rows: some 90 KB of predictions for a 64 KB filesystem.
    signal_frame(n_rows=6000).to_csv(data, header=False, index=False)
    predictions = tmp_path / "small" / "predictions.csv"
    command = [sys.executable, str(PROJECT_ROOT / "train_model.py"), "--data-file", str(data), *QUICK,
               "--predictions-file", str(predictions)]  # fmt: skip
    result, _, left = run_on_small_tmpfs(tmp_path, tracking_uri, command, tmpdir_on_it=False)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert line.endswith(
        f"train_model failed: {predictions}: cannot write the predictions: no space left on device"
    )
    assert left == []  # no half-written temp file


@pytest.mark.slow
@needs_unshare
def test_a_pipeline_that_fails_on_a_full_disk_says_so_and_leaves_no_scratch(
    tmp_path: Path, tracking_uri: str, signal_csv
) -> None:
    # train_model writes the predictions into the driver's scratch folder, then fails saving
    # the model: a failed step after the hand-off file exists.
    command = [sys.executable, str(PROJECT_ROOT / "main.py"), "--data-file", str(signal_csv), *BIG_MODEL]
    result, tmpdir, left = run_on_small_tmpfs(tmp_path, tracking_uri, command, tmpdir_on_it=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = error_lines(result.stderr)[-1]
    assert f"train_model failed: {tmpdir}: no space left on device" in last
    assert [name for name in left if "pystock-" in name or name.endswith(config.PREDICTIONS_FILE_NAME)] == []
    statuses = {run.info.status for run in MlflowClient(tracking_uri).search_runs(["0"])}
    assert statuses == {"FAILED"}
