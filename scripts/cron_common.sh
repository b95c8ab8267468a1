# Sourced by cron_train.sh and cron_score.sh after they define log(), stamp(), $python and
# $MLFLOW_TRACKING_URI: the lock that keeps ticks from overlapping, and the check of the tracking
# store before `mlflow run` starts.

# Bound MLflow's own retries, as the Docker entrypoint does: its defaults back off for minutes
# against a server that dies mid-run.
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=${MLFLOW_HTTP_REQUEST_MAX_RETRIES:-3}
export MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=${MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR:-1}
export MLFLOW_HTTP_REQUEST_TIMEOUT=${MLFLOW_HTTP_REQUEST_TIMEOUT:-30}

# flock's exit code when the lock is held, told apart from its errors (a bad descriptor is 65).
LOCK_HELD=75

# The folder for the locks, on stdout (its error goes to stderr, as it is called in $(...)):
# PYSTOCK_LOCK_DIR as given, else a folder of this user's own, never a
# shared one: in a shared /tmp another account can create the lock first, and then no tick of
# this user can open it.
private_lock_dir() {
  if [ -n "${PYSTOCK_LOCK_DIR:-}" ]; then
    printf '%s' "$PYSTOCK_LOCK_DIR"
    return 0
  fi
  # Always under $HOME, never $XDG_RUNTIME_DIR: cron has no session, so a login shell and a
  # cron tick would otherwise lock in different folders and overlap.
  local dir
  if [ -n "${HOME:-}" ]; then
    dir=$HOME/.cache/pystock-training
  else
    log "ERROR: HOME is not set; set PYSTOCK_LOCK_DIR to a folder of this user's" >&2
    return 1
  fi
  if [ -L "$dir" ] || { [ -e "$dir" ] && { [ ! -d "$dir" ] || [ ! -O "$dir" ]; }; }; then
    log "ERROR: lock folder $dir is not a folder owned by $(id -un); remove it or set PYSTOCK_LOCK_DIR" >&2
    return 1
  fi
  if ! mkdir -p -m 0700 "$dir" 2>/dev/null; then
    log "ERROR: cannot create the lock folder $dir; set PYSTOCK_LOCK_DIR to a folder of this user's" >&2
    return 1
  fi
  printf '%s' "$dir"
}

# take_lock FILE: open FILE on fd 9 and hold it with flock -n. Returns 0 when held, $LOCK_HELD
# when another tick holds it, 1 (after one ERROR line) when it cannot be opened or locked: an
# error, so that cron mails it instead of every tick reporting "already running" for good.
take_lock() {
  local file=$1 status=0
  if ! { exec 9>>"$file"; } 2>/dev/null; then
    log "ERROR: cannot open the lock file $file for writing (owner: $(stat -c %U "$file" 2>/dev/null || echo 'none, folder not writable')); remove it or set PYSTOCK_LOCK_DIR"
    return 1
  fi
  flock -n -E "$LOCK_HELD" 9 2>/dev/null || status=$?
  if [ "$status" -ne 0 ] && [ "$status" -ne "$LOCK_HELD" ]; then
    log "ERROR: cannot lock $file (flock exit $status)"
    return 1
  fi
  return "$status"
}

# check_store: the bounded preflight of a tracking server, or the check (and, for a new store,
# the creation under a lock) of a SQLite store. Their one line is on stdout, timestamped.
check_store() {
  local check=(-m pystock_training.store_check)
  case $MLFLOW_TRACKING_URI in
    http://* | https://*) check=(-m pystock_training.preflight --timeout "${PYSTOCK_PREFLIGHT_TIMEOUT:-15}") ;;
  esac
  # PYTHONPATH, not cd: a relative sqlite URI resolves against the working directory.
  PYTHONPATH="$project${PYTHONPATH:+:$PYTHONPATH}" "$python" "${check[@]}" 2>&1 | stamp
  return "${PIPESTATUS[0]}"
}
