#!/usr/bin/env bash
# The one command a crontab line calls to score a file with the champion, never overlapping.
#
#   scripts/cron_score.sh INPUT_FILE OUTPUT_FILE [MODEL_URI]
#       (MODEL_URI default: models:/training-model-psystock@champion, pinned to its version)
#
# - Works from any working directory: relative paths resolve against the caller's directory
#   (not the project's, where `mlflow run` runs the step). Honours MLFLOW_TRACKING_URI (unset:
#   the project's own sqlite:///<project>/mlflow.db, absolute).
# - Runs under `flock -n`, one lock per output file: a tick while the last one still writes the
#   same file exits 0 with "already running". The lock is this user's own
#   (~/.cache/pystock-training); a lock that cannot be
#   opened is an ERROR line and exit 1.
# - Checks the tracking store first: a server that does not answer within 15 s, or a SQLite
#   store that cannot be used, is one ERROR line and exit 1.
# - A missing input file is one ERROR line and exit 1 before any run is created (the upstream
#   job has not written it yet); every other problem is the step's one ERROR line and a FAILED run.
# - The output appears whole or not at all (written to a temp file, then renamed).
# - Timestamped lines on stdout; exit 0 when the file was scored, non-zero on a failure, which
#   cron mails.
# Environment: PYSTOCK_PYTHON (default <project>/.venv/bin/python), PYSTOCK_LOCK_DIR,
# PYSTOCK_PREFLIGHT_TIMEOUT (seconds, default 15).
set -euo pipefail

project=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYSTOCK_PYTHON:-$project/.venv/bin/python}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$project/mlflow.db}

log() { printf '%s cron_score: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$line"; done; }

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  log "ERROR: usage: $0 INPUT_FILE OUTPUT_FILE [MODEL_URI]"
  exit 2
fi
absolute() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
input_file=$(absolute "$1")
output_file=$(absolute "$2")
model_params=()
if [ $# -eq 3 ]; then model_params=(-P "model_uri=$3"); fi

if [ ! -x "$python" ]; then
  log "ERROR: $python not found; run 'make venv' in $project or set PYSTOCK_PYTHON"
  exit 1
fi
if [ ! -f "$input_file" ]; then
  log "ERROR: input file $input_file not found; nothing scored"
  exit 1
fi

# shellcheck source=scripts/cron_common.sh
. "$project/scripts/cron_common.sh"

lock_id=$(printf '%s' "$output_file" | sha256sum | cut -c1-12)
lock_dir=$(private_lock_dir) || exit 1
lock_file=$lock_dir/pystock-score-$lock_id.lock
status=0
take_lock "$lock_file" || status=$?
case $status in
  0) ;;
  "$LOCK_HELD") log "already running (lock $lock_file is held for $output_file); nothing to do"; exit 0 ;;
  *) exit 1 ;;
esac

# A dead server fails here in seconds, not after MLflow's minutes of retries; a SQLite store
# that cannot be used fails in one line.
check_store || exit 1

log "scoring $input_file into $output_file against $MLFLOW_TRACKING_URI"
# The step runs in its own process group; a TERM to this script is passed on to all of it, so
# the run ends KILLED and the temp file is removed instead of both being orphaned.
# The timestamping reader closes the lock (fd 9), or it could outlive this script holding it;
# it is waited for, so the step's lines all come before this script's last one.
exec 8> >(exec 9>&-; stamp)
stamper=$!
set -m
PATH="$(dirname "$python"):$PATH" "$python" -m mlflow run "$project" --env-manager local -e score \
  -P input_file="$input_file" -P output_file="$output_file" "${model_params[@]}" >&8 2>&1 &
scorer=$!
exec 8>&-
trap 'log "terminated; stopping the scorer"; kill -TERM -- -"$scorer" 2>/dev/null' TERM INT
status=0
wait "$scorer" || status=$?
if [ "$status" -ne 0 ]; then
  # wait returns early when a trapped signal arrives; let the step finish ending its run.
  wait "$scorer" 2>/dev/null || true
fi
wait "$stamper" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  log "ERROR: scoring $input_file failed (exit $status); $output_file is unchanged"
  exit "$status"
fi
log "scored $input_file into $output_file"
