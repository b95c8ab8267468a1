#!/usr/bin/env bash
# The training image's command: `mlflow run . --env-manager local "$@"` against the tracking
# server in MLFLOW_TRACKING_URI. tests/test_server_e2e.py runs this same script outside Docker
# with the same environment variables (this machine has no Docker engine).
#
#   MLFLOW_TRACKING_URI       required: http(s)://host:port of the tracking server
#   MLFLOW_TRACKING_USERNAME  optional basic-auth credentials, read by MLflow itself and never
#   MLFLOW_TRACKING_PASSWORD  logged, tagged or passed as parameters
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${MLFLOW_TRACKING_URI:-}" ]; then
  # The MLflow 1.x image read MLflow_TRACKING_SERVER, which MLflow ignores, and silently logged
  # into the container's own disk. Refuse instead.
  echo "ERROR docker_entrypoint: MLFLOW_TRACKING_URI is not set; point it at the tracking server" >&2
  exit 2
fi
# Bound MLflow's own retries: its defaults back off for minutes against a dead server.
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=${MLFLOW_HTTP_REQUEST_MAX_RETRIES:-3}
export MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=${MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR:-1}
export MLFLOW_HTTP_REQUEST_TIMEOUT=${MLFLOW_HTTP_REQUEST_TIMEOUT:-30}

python -m pystock_training.preflight --timeout "${PYSTOCK_PREFLIGHT_TIMEOUT:-15}"
python -m pystock_training.store_check # a sqlite:// store (a mounted volume): checked, created under a lock
exec mlflow run . --env-manager local "$@"
