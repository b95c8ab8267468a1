"""Wall time of the default pipeline on the embedded SQLite store and on a PostgreSQL-backed server.

Both are measured in the same run, alternating, so the ratio holds on a noisy shared machine:

    .venv/bin/python benchmarks/backend_wall.py [--repeats 3]

Each pipeline runs the image's command (scripts/docker_entrypoint.sh for the server; plain
`mlflow run . --env-manager local` for SQLite) with -P force=true, so every repeat trains.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import PROJECT_ROOT, subprocess_env
from tests.servers import MlflowServer, postgres_cluster

logger = logging.getLogger("backend_wall")


def timed(command: list[str], tracking_uri: str, cwd: Path) -> float:
    started = time.monotonic()
    subprocess.run(command, cwd=cwd, env=subprocess_env(tracking_uri), check=True, capture_output=True)
    return time.monotonic() - started


@click.command()
@click.option("--repeats", type=int, default=3, show_default=True)
def main(repeats: int) -> None:
    """Print the median wall time per backend and the server/SQLite ratio."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as scratch, postgres_cluster() as backend:
        work = Path(scratch)
        server = MlflowServer(backend, work / "artifacts", work / "server.log")
        server.start()
        try:
            sqlite_uri = f"sqlite:///{work / 'mlflow.db'}"
            local = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local"]
            image = [str(PROJECT_ROOT / "scripts" / "docker_entrypoint.sh")]
            times: dict[str, list[float]] = {"sqlite": [], "server": []}
            for _ in range(repeats):
                times["sqlite"].append(timed([*local, "-P", "force=true"], sqlite_uri, work))
                times["server"].append(timed([*image, "-P", "force=true"], server.uri, work))
        finally:
            server.stop()
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        logger.info("%-7s median %.1fs  (%s)", name, medians[name], ", ".join(f"{v:.1f}" for v in values))
    logger.info("server / sqlite = %.2f", medians["server"] / medians["sqlite"])


if __name__ == "__main__":
    main()
