#!/usr/bin/env bash
# The tracking server as production runs it: PostgreSQL backend store, artifacts served by the
# server from a directory (a volume). docker-compose.yml and tests/test_server_e2e.py both run
# this script, so the tests exercise exactly the compose configuration.
#
# Environment:
#   MLFLOW_BACKEND_STORE_URI  postgresql+psycopg2://user:password@host:5432/db  (required)
#   MLFLOW_ARTIFACTS_DIR      where served artifacts live          (default /mlartifacts)
#   MLFLOW_HOST, MLFLOW_PORT  where to listen                      (default 0.0.0.0:5000)
#   MLFLOW_ALLOWED_HOSTS      Host headers to accept, comma-separated; MLflow 3's security
#                             middleware rejects any other (default: localhost, 127.0.0.1, mlflow)
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg2://mlflow:mlflow@postgres:5432/mlflow}"
port=${MLFLOW_PORT:-5000}
exec mlflow server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DIR:-/mlartifacts}" \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "$port" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:$port,127.0.0.1,127.0.0.1:$port,mlflow,mlflow:$port}" \
  --workers "${MLFLOW_WORKERS:-2}"
