"""The production stack's login: a PostgreSQL-backed `mlflow server --app-name basic-auth`, for real.

The server is `scripts/mlflow_server.sh` with the environment docker-compose.yml gives it (secret
key, admin, trainer and reader passwords), so its accounts and grants are the ones
`scripts/mlflow_auth_setup.py` makes in the compose stack.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from pystock_training import config
from tests.conftest import PROJECT_ROOT, signal_frame, subprocess_env
from tests.servers import MlflowServer, pg_dump, postgres_cluster

pytestmark = pytest.mark.slow

ENTRYPOINT = PROJECT_ROOT / "scripts" / "docker_entrypoint.sh"
SECRET_KEY = "flask-Secret-K3y-for-csrf-0123456789"
ADMIN = ("admin", "Adm1n-Passw0rd-for-the-tests")
TRAINER = ("pystock-trainer", "Tr4iner-Passw0rd-for-the-tests")
READER = ("pystock-reader", "Re4der-Passw0rd-for-the-tests")
WRONG = "Wr0ng-Passw0rd-for-the-tests"
NEWCOMER = ("somebody-new", "S0mebody-New-Passw0rd")
SECRETS = (SECRET_KEY, ADMIN[1], TRAINER[1], READER[1], WRONG, NEWCOMER[1])
AUTH_ENV = {
    "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
    "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
    "PYSTOCK_TRAINER_PASSWORD": TRAINER[1],
    "PYSTOCK_READER_PASSWORD": READER[1],
}
COMPOSE_LINT = str(Path(sys.executable).parent / "compose-lint")
CHAMPION_URI = f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}"


@pytest.fixture(scope="module")
def backend():
    with postgres_cluster() as uri:
        yield uri


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-auth-server")
    server = MlflowServer(backend, base / "artifacts", base / "server.log", auth=AUTH_ENV)
    server.start()
    yield server
    server.stop()


def as_user(uri: str, user: tuple[str, str]) -> dict[str, str]:
    return subprocess_env(uri) | {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}


def client_as(monkeypatch: pytest.MonkeyPatch, uri: str, user: tuple[str, str]) -> MlflowClient:
    """MLflow's client in this process, logged in as ``user`` (MLflow reads these variables per call)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
    return MlflowClient(uri)


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory) -> subprocess.CompletedProcess[str]:
    """One pipeline run as the trainer: `mlflow run . --env-manager local`, as a user types it."""
    work = tmp_path_factory.mktemp("trainer")
    data = work / "signal.csv"
    signal_frame(600, seed=3).to_csv(data, header=False, index=False)
    return subprocess.run(
        [sys.executable, "-m", "mlflow", "run", ".", "--env-manager", "local", "-P", f"data_file={data}"],
        cwd=PROJECT_ROOT,
        env=as_user(server.uri, TRAINER),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def admin_runs(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> list[mlflow.entities.Run]:
    client = client_as(monkeypatch, server.uri, ADMIN)
    experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiment_ids, max_results=1000)


def test_no_credentials_gets_401(server) -> None:
    api = f"{server.uri}/api/2.0/mlflow"
    calls = [
        ("GET", f"{api}/experiments/search?max_results=1", None),
        ("GET", f"{api}/registered-models/alias?name={config.MODEL_NAME}&alias=champion", None),
        ("POST", f"{api}/runs/create", {"experiment_id": "0"}),
        ("POST", f"{api}/registered-models/alias", {"name": config.MODEL_NAME, "alias": "x", "version": "1"}),
    ]
    for method, url, body in calls:
        response = requests.request(method, url, json=body, timeout=30)
        assert response.status_code == 401, (method, url, response.status_code, response.text[:300])
    # The healthcheck's /health stays open: it proves the server is up, and nothing more.
    assert requests.get(f"{server.uri}/health", timeout=30).status_code == 200


def test_the_trainer_runs_the_pipeline_end_to_end(server, trained, monkeypatch) -> None:
    assert trained.returncode == 0, trained.stderr[-3000:]
    runs = admin_runs(server, monkeypatch)
    entry_points = sorted(run.data.tags.get("mlflow.project.entryPoint", "") for run in runs)
    assert entry_points == ["evaluate_model", "main", "register_model", "train_model"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    parent = next(run for run in runs if run.data.tags["mlflow.project.entryPoint"] == "main")
    assert parent.data.tags[config.TAG_DECISION] == "promoted"
    champion = MlflowClient(server.uri).get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION)
    assert champion.version == parent.data.tags[config.TAG_MODEL_VERSION]


def test_the_reader_loads_the_champion_but_cannot_move_an_alias(server, trained, monkeypatch) -> None:
    assert trained.returncode == 0, trained.stderr[-3000:]
    reader = client_as(monkeypatch, server.uri, READER)
    champion = reader.get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION)
    rows = signal_frame(20, seed=4).iloc[:, :-1]
    rows.columns = [f"f{i}" for i in range(14)]
    proba = np.asarray(mlflow.pyfunc.load_model(CHAMPION_URI).predict(rows))
    assert proba.shape == (20,) and np.all((proba > 0) & (proba < 1))

    with pytest.raises(MlflowException) as refused:
        reader.set_registered_model_alias(config.MODEL_NAME, config.ALIAS_CHAMPION, champion.version)
    assert refused.value.error_code == "PERMISSION_DENIED"
    response = requests.post(
        f"{server.uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": config.MODEL_NAME, "alias": config.ALIAS_CHAMPION, "version": champion.version},
        auth=READER,
        timeout=30,
    )
    assert response.status_code == 403, response.text[:300]
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403"):
        reader.create_run("0")
    assert (
        reader.get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION).version
        == champion.version
    )


def test_a_new_account_can_change_nothing(server, trained, monkeypatch) -> None:
    assert trained.returncode == 0, trained.stderr[-3000:]
    newcomer = NEWCOMER
    client_as(monkeypatch, server.uri, ADMIN)
    get_app_client("basic-auth", tracking_uri=server.uri).create_user(*newcomer)
    api = f"{server.uri}/api/2.0/mlflow"
    version = MlflowClient(server.uri).get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION)
    writes = [
        (f"{api}/runs/create", {"experiment_id": "0"}),
        (
            f"{api}/registered-models/alias",
            {"name": config.MODEL_NAME, "alias": "x", "version": version.version},
        ),
        (f"{api}/model-versions/create", {"name": config.MODEL_NAME, "source": version.source}),
        (f"{api}/registered-models/delete", {"name": config.MODEL_NAME}),
    ]
    for url, body in writes:
        response = requests.post(url, json=body, auth=newcomer, timeout=30)
        assert response.status_code == 403, (url, response.status_code, response.text[:300])
    # default_permission is NO_PERMISSIONS: not even reading what nobody granted.
    response = requests.get(
        f"{api}/registered-models/alias",
        params={"name": config.MODEL_NAME, "alias": config.ALIAS_CHAMPION},
        auth=newcomer,
        timeout=30,
    )
    assert response.status_code == 403, response.text[:300]


def test_a_wrong_password_fails_in_one_line_and_leaves_no_run(server, trained, tmp_path, monkeypatch) -> None:
    assert trained.returncode == 0, trained.stderr[-3000:]
    before = {run.info.run_id for run in admin_runs(server, monkeypatch)}
    # The image's command, as `docker compose run trainer` runs it with a mistyped password.
    result = subprocess.run(
        [str(ENTRYPOINT)],
        cwd=tmp_path,
        env=as_user(server.uri, (TRAINER[0], WRONG)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output[-3000:]
    assert server.uri in errors[0] and f"refused the login of '{TRAINER[0]}'" in errors[0], errors[0]
    assert "MLFLOW_TRACKING_PASSWORD" in errors[0]
    assert "Traceback" not in output and WRONG not in output

    # No credentials at all: the same one line says what to set.
    no_login = subprocess.run(
        [str(ENTRYPOINT)],
        cwd=tmp_path,
        env=subprocess_env(server.uri),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in (no_login.stdout + no_login.stderr).splitlines() if "ERROR" in line]
    assert no_login.returncode != 0 and len(errors) == 1, no_login.stderr[-3000:]
    assert "requires a login" in errors[0]

    # `mlflow run` typed by hand (no preflight) fails before it creates a run: nothing RUNNING.
    by_hand = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", ".", "--env-manager", "local"],
        cwd=PROJECT_ROOT,
        env=as_user(server.uri, (TRAINER[0], WRONG)) | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert by_hand.returncode != 0
    after = admin_runs(server, monkeypatch)
    assert {run.info.run_id for run in after} == before
    assert "RUNNING" not in {run.info.status for run in after}


def test_no_password_appears_in_params_tags_artifacts_or_logs(
    backend, server, trained, tmp_path, monkeypatch
):
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = client_as(monkeypatch, server.uri, ADMIN)
    places: dict[str, bytes] = {
        "the pipeline's output": (trained.stdout + trained.stderr).encode(),
        "the server log": server.log.read_bytes(),
        # Every table of the tracking and user stores: params, tags, metrics, descriptions, users.
        "the database": pg_dump(backend),
    }
    for run in admin_runs(server, monkeypatch):
        places[f"run {run.info.run_id}"] = repr((run.data.params, run.data.tags)).encode()
    for version in client.search_model_versions(f"name = '{config.MODEL_NAME}'"):
        places[f"version {version.version}"] = repr((version.tags, version.description)).encode()
    for path in server.artifacts.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes()
    assert any(str(path).endswith("MLmodel") for path in places), "no artifacts were searched"
    for secret in SECRETS:
        found = [place for place, content in places.items() if secret.encode() in content]
        assert not found, f"a password appears in {found}"


def test_a_too_short_password_stops_the_setup_in_one_line(server, tmp_path) -> None:
    # The setup mlflow_server.sh runs on every start, against this server, with a reader password
    # MLflow's policy refuses: one line naming the variable, exit 1, the password not echoed.
    short = "Sh0rt-pw"
    env = subprocess_env(server.uri) | AUTH_ENV | {"PYSTOCK_READER_PASSWORD": short}
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "mlflow_auth_setup.py"), "--timeout", "30"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "PYSTOCK_READER_PASSWORD" in errors[0] and "12 characters" in errors[0], (
        result.stderr[-3000:]
    )
    assert short not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_compose_runs_the_server_with_auth_and_no_secret_defaults() -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    services = yaml.safe_load(text)["services"]
    server_env = services["mlflow"]["environment"]
    trainer_env = services["trainer"]["environment"]
    # Every secret is required from the environment: `${NAME:?message}`, never a default.
    secrets = {
        "POSTGRES_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "PYSTOCK_TRAINER_PASSWORD",
        "PYSTOCK_READER_PASSWORD",
    }
    references = re.findall(r"\$\{(\w+)(:?[-?])?([^}]*)\}", text)
    for name, operator, _ in references:
        if name in secrets or re.search("PASSWORD|SECRET", name):
            assert operator == ":?", f"${{{name}}} in docker-compose.yml must be ${{{name}:?message}}"
    assert secrets <= {name for name, _, _ in references}
    for name in secrets - {"POSTGRES_PASSWORD"}:
        assert server_env[name].startswith(f"${{{name}:?"), name
    assert trainer_env["MLFLOW_TRACKING_PASSWORD"].startswith("${PYSTOCK_TRAINER_PASSWORD:?")
    # The server script turns on basic-auth unless told PYSTOCK_SERVER_AUTH=none, which compose never says.
    assert "PYSTOCK_SERVER_AUTH" not in server_env
    assert "--app-name basic-auth" in (PROJECT_ROOT / "scripts" / "mlflow_server.sh").read_text()
    # Published on loopback unless MLFLOW_PUBLISH_ADDRESS says otherwise.
    assert services["mlflow"]["ports"] == [
        "${MLFLOW_PUBLISH_ADDRESS:-127.0.0.1}:${MLFLOW_PUBLISH_PORT:-5000}:5000"
    ]
    # And compose-lint's security rules: no inline or defaulted credential, no port on every interface.
    result = subprocess.run(
        [COMPOSE_LINT, "check", "--no-env", "--format", "json", str(PROJECT_ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rule in ("CL-0005", "CL-0020", "CL-0021"):
        assert rule not in result.stdout, rule


def test_the_server_refuses_to_start_without_its_secrets(tmp_path) -> None:
    env = subprocess_env("unused") | {"MLFLOW_BACKEND_STORE_URI": "sqlite:///unused.db"} | AUTH_ENV
    for missing in AUTH_ENV:
        result = subprocess.run(
            [str(PROJECT_ROOT / "scripts" / "mlflow_server.sh")],
            cwd=tmp_path,
            env={key: value for key, value in env.items() if key != missing},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert f"set {missing}" in result.stderr, result.stderr
        assert not list(tmp_path.iterdir())  # refused before anything was started or written
