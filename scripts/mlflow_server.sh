#!/usr/bin/env bash
# The tracking server as production runs it: PostgreSQL backend store, artifacts served by the
# server from a directory (a volume), and MLflow's own authentication (the basic-auth app) with
# a trainer and a read-only account. docker-compose.yml and the real-server tests
# (tests/test_server_e2e.py, tests/test_auth_e2e.py) all run this script, so the tests exercise
# exactly the compose configuration.
#
# Environment (no secret has a default; a missing one stops the script with one line):
#   MLFLOW_BACKEND_STORE_URI        postgresql+psycopg2://user:password@host:5432/db  (required)
#   MLFLOW_ARTIFACTS_DIR            where served artifacts live          (default /mlartifacts)
#   MLFLOW_HOST, MLFLOW_PORT        where to listen                      (default 127.0.0.1:5000)
#   MLFLOW_ALLOWED_HOSTS            Host headers to accept, comma-separated; MLflow 3's security
#                                   middleware rejects any other (default: localhost, 127.0.0.1, mlflow)
#   PYSTOCK_SERVER_AUTH             basic-auth (default) or none: none serves without any login and
#                                   is for throw-away local servers only
# With basic-auth:
#   MLFLOW_FLASK_SERVER_SECRET_KEY  required: signs the CSRF tokens; static, so every worker and
#                                   every restart accepts the same ones
#   MLFLOW_AUTH_ADMIN_USERNAME      default admin
#   MLFLOW_AUTH_ADMIN_PASSWORD      required: creates the admin on the first start, and the setup
#                                   below logs in with it on every start
#   PYSTOCK_TRAINER_USERNAME/_PASSWORD, PYSTOCK_READER_USERNAME/_PASSWORD, PYSTOCK_EXPERIMENT_NAME,
#   PYSTOCK_MODEL_NAME              the accounts and grants: see scripts/mlflow_auth_setup.py
#   MLFLOW_AUTH_DATABASE_URI        the user store (default: the backend store's database; its
#                                   tables and migration table are apart from the tracking ones)
#   MLFLOW_AUTH_CONFIG_PATH         a basic_auth.ini of your own instead of the one written here
#   MLFLOW_READY_FILE               touched once the accounts are set up (the compose healthcheck)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg2://mlflow:PASSWORD@postgres:5432/mlflow}"
port=${MLFLOW_PORT:-5000}
host=${MLFLOW_HOST:-127.0.0.1}
auth=${PYSTOCK_SERVER_AUTH:-basic-auth}
server=(
  mlflow server
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
  --artifacts-destination "${MLFLOW_ARTIFACTS_DIR:-/mlartifacts}"
  --serve-artifacts
  --host "$host"
  --port "$port"
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:$port,127.0.0.1,127.0.0.1:$port,mlflow,mlflow:$port}"
  --workers "${MLFLOW_WORKERS:-2}"
)
if [ -n "${MLFLOW_READY_FILE:-}" ]; then
  rm -f "$MLFLOW_READY_FILE"
fi

case "$auth" in
  none)
    echo "WARNING mlflow_server: PYSTOCK_SERVER_AUTH=none: anyone who reaches port $port can write" >&2
    exec "${server[@]}"
    ;;
  basic-auth) ;;
  *)
    echo "ERROR mlflow_server: PYSTOCK_SERVER_AUTH must be basic-auth or none, not '$auth'" >&2
    exit 2
    ;;
esac

: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (a long random string, the same on every start)}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (the password of the admin account)}"
: "${PYSTOCK_TRAINER_PASSWORD:?set PYSTOCK_TRAINER_PASSWORD (the password of the trainer account)}"
: "${PYSTOCK_READER_PASSWORD:?set PYSTOCK_READER_PASSWORD (the password of the read-only account)}"

if [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then
  # The ini holds the user store's URI, which may carry the database password: a private file.
  umask 077
  config_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXXXX")
  export MLFLOW_AUTH_CONFIG_PATH=$config_dir/basic_auth.ini
  # NO_PERMISSIONS: an account nobody granted anything sees nothing and changes nothing. The
  # credential cache: every request otherwise pays a scrypt hash (0.05-0.2 s), hundreds of them
  # a pipeline run; the price is that a changed password may work on another worker for 60 s.
  cat >"$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = 60
EOF
  umask 022
fi

"${server[@]}" --app-name basic-auth &
server_pid=$!
# The server is a child rather than exec'd, so the accounts can be set up once it answers: pass
# a stop signal on to it, and end with its exit status.
trap 'kill -TERM "$server_pid" 2>/dev/null' TERM INT
# The setup talks to the server from inside: over loopback when it listens on every interface.
case "$host" in 0.0.0.0 | "::") local_host=127.0.0.1 ;; *) local_host=$host ;; esac
if ! MLFLOW_TRACKING_URI="http://$local_host:$port" \
  python "$here/mlflow_auth_setup.py" --timeout "${MLFLOW_STARTUP_TIMEOUT:-120}" --server-pid "$server_pid"; then
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" || true
  exit 1
fi
if [ -n "${MLFLOW_READY_FILE:-}" ]; then
  touch "$MLFLOW_READY_FILE"
fi
status=0
wait "$server_pid" || status=$?
# A trapped signal interrupts `wait`; the second one collects the server's own exit status.
if kill -0 "$server_pid" 2>/dev/null; then
  wait "$server_pid" || status=$?
fi
rm -rf "${config_dir:-}"
exit "$status"
