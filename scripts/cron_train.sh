#!/usr/bin/env bash
# The one command a crontab line calls: train on DATA_FILE if it is new, never twice, never
# overlapping.
#
#   scripts/cron_train.sh [DATA_FILE]      (default: data/training/data.csv of this project)
#
# - Works from any working directory; honours MLFLOW_TRACKING_URI (unset: the project's own
#   sqlite:///<project>/mlflow.db, absolute, so cron's $HOME working directory does not matter).
# - Runs under `flock -n`: a tick while another is running exits 0 with "already running". The
#   lock is this user's own (~/.cache/pystock-training);
#   a lock that cannot be opened is an ERROR line and exit 1.
# - Checks the tracking store first: a server that does not answer within 15 s, or a SQLite
#   store that cannot be used, is one ERROR line and exit 1; a new SQLite store is created
#   under a lock, so concurrent first runs do not race.
# - Checks the run key first without creating a run: a tick with nothing new exits 0 and leaves
#   the tracking store untouched.
# - Timestamped lines on stdout; exit 0 when there was nothing to do or the pipeline did its job
#   (promoted or rejected), non-zero only on a real failure, which cron mails.
# Environment: PYSTOCK_PYTHON (default <project>/.venv/bin/python), PYSTOCK_LOCK_FILE or
# PYSTOCK_LOCK_DIR, PYSTOCK_PREFLIGHT_TIMEOUT (seconds, default 15).
set -uo pipefail

project=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYSTOCK_PYTHON:-$project/.venv/bin/python}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$project/mlflow.db}

log() { printf '%s cron_train: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$line"; done; }

data_file=${1:-$project/data/training/data.csv}
case $data_file in /*) ;; *) data_file=$PWD/$data_file ;; esac

if [ ! -x "$python" ]; then
  log "ERROR: $python not found; run 'make venv' in $project or set PYSTOCK_PYTHON"
  exit 1
fi

# shellcheck source=scripts/cron_common.sh
. "$project/scripts/cron_common.sh"

# One lock per tracking store: ticks for other stores do not block each other.
if [ -n "${PYSTOCK_LOCK_FILE:-}" ]; then
  lock_file=$PYSTOCK_LOCK_FILE
else
  lock_id=$(printf '%s' "$MLFLOW_TRACKING_URI" | sha256sum | cut -c1-12)
  lock_dir=$(private_lock_dir) || exit 1
  lock_file=$lock_dir/pystock-training-$lock_id.lock
fi
take_lock "$lock_file"
case $? in
  0) ;;
  "$LOCK_HELD") log "already running (lock $lock_file is held); nothing to do"; exit 0 ;;
  *) exit 1 ;;
esac

cd "$project" || exit 1
# A dead server fails here in seconds, not after MLflow's minutes of retries; a SQLite store
# that cannot be used fails in one line, and a new one is created under a lock.
check_store || exit 1
# The pre-check reads the store and creates nothing: exit 0 = trained already, 10 = new.
"$python" -m pystock_training.trigger --data-file "$data_file" 2>&1 | stamp
status=${PIPESTATUS[0]}
case $status in
  0) exit 0 ;;
  10) ;;
  *) log "ERROR: the run-key check failed (exit $status)"; exit "$status" ;;
esac

log "training on $data_file against $MLFLOW_TRACKING_URI"
# The pipeline runs in its own process group; a TERM to this script is passed on to all of it,
# so every step ends its run instead of being orphaned RUNNING.
# The timestamping reader closes the lock (fd 9), or it could outlive this script holding it;
# it is waited for, so the pipeline's lines all come before this script's last one.
exec 8> >(exec 9>&-; stamp)
stamper=$!
set -m
PATH="$(dirname "$python"):$PATH" "$python" -m mlflow run "$project" --env-manager local \
  -P data_file="$data_file" >&8 2>&1 &
pipeline=$!
exec 8>&-
trap 'log "terminated; stopping the pipeline"; kill -TERM -- -"$pipeline" 2>/dev/null' TERM INT
wait "$pipeline"
status=$?
if [ "$status" -ne 0 ]; then
  # wait returns early when a trapped signal arrives; let the pipeline finish ending its runs.
  wait "$pipeline" 2>/dev/null
fi
wait "$stamper" 2>/dev/null
if [ "$status" -ne 0 ]; then
  log "ERROR: pipeline failed (exit $status)"
fi
exit "$status"
