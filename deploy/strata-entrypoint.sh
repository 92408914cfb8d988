#!/usr/bin/env bash
# `strata` for containers and service managers: the image's entrypoint, and what the
# Kubernetes manifests and systemd units run. Installed as `strata-entrypoint`.
#
#   strata-entrypoint server ARGS...  a run in $STRATA_RUN_DIR: a fresh one (with --config
#                                     $STRATA_CONFIG when set) if the directory holds no saved
#                                     state, `strata server --resume DIR` if it does, and
#                                     nothing if that run has finished (see STRATA_WHEN_DONE)
#   strata-entrypoint client ARGS...  `strata client ARGS...`; with STRATA_STATE_SLOTS=DIR it
#                                     first claims a free state directory DIR/slot-<k> (below)
#   strata-entrypoint probe [URL]     for liveness probes: 0 if the daemon answers URL
#                                     (default http://127.0.0.1:9090/healthz), or if it
#                                     finished its run and idles
#   strata-entrypoint ANYTHING...     `strata ANYTHING...` (certs, token, simulate, health...)
#
# Environment:
#   STRATA_BIN          the binary (default: strata, on PATH)
#   STRATA_RUN_DIR      server: the run's directory (its --out, and --resume's DIR)
#   STRATA_CONFIG       server: a TOML file for a fresh run (ignored on resume: a resumed run
#                       takes DIR/config.toml, so change the run directory to change settings)
#   STRATA_WHEN_DONE    exit (default) or idle: when the run is over, exit 0, or stay up and
#                       idle until stopped. Kubernetes restarts a Deployment's or StatefulSet's
#                       container whatever its exit code, so the manifests use idle.
#   STRATA_DONE_MARKER  the file that says "finished, idling" to `probe` (default /tmp/strata-done)
#   STRATA_STATE_SLOTS  client: a directory shared by several containers (docker compose
#                       --scale): each one holds an flock on DIR/slot-<k>.lock for as long as
#                       it runs and keeps its state in DIR/slot-<k>, so every live client has
#                       its own identity and a restarted or recreated container takes over one
#                       that nobody holds, which a resumed server is waiting for.
set -euo pipefail

bin="${STRATA_BIN:-strata}"
when_done="${STRATA_WHEN_DONE:-exit}"
done_marker="${STRATA_DONE_MARKER:-/tmp/strata-done}"

say() { echo "strata-entrypoint: $*" >&2; }

case "$when_done" in
  exit | idle) ;;
  *) say "STRATA_WHEN_DONE must be exit or idle, not '$when_done'"; exit 2 ;;
esac

# The run is over: exit 0, or idle until SIGTERM (the liveness probe passes meanwhile).
finished() {
  if [ "$when_done" = idle ]; then
    touch "$done_marker"
    say "idling until stopped"
    trap 'exit 0' TERM INT
    sleep infinity &
    wait $!
  fi
  exit 0
}

# Runs "$@" as a child, passing SIGTERM/SIGINT on; returns its exit code.
supervise() {
  local child stopping=0 rc
  "$@" &
  child=$!
  trap 'stopping=1; kill -TERM "$child" 2>/dev/null || true' TERM INT
  rc=0
  wait "$child" || rc=$?
  # A trapped signal ends `wait` early: wait again for the child's own exit code (bash keeps
  # it until waited for, even if the child is gone by now).
  while [ "$stopping" -eq 1 ]; do
    local again=0
    wait "$child" || again=$?
    if [ "$again" -ne 127 ]; then rc=$again; fi
    kill -0 "$child" 2>/dev/null || break
  done
  trap - TERM INT
  if [ "$stopping" -eq 1 ]; then exit "$rc"; fi
  return "$rc"
}

server() {
  local run_dir="${STRATA_RUN_DIR:?STRATA_RUN_DIR must name the run directory}"
  local state="$run_dir/state/state.json" next rounds
  rm -f "$done_marker"
  if [ -f "$state" ]; then
    # state.json is pretty-printed JSON; config.toml starts with the top-level keys.
    next="$(sed -n 's/^ *"next_round": *\([0-9][0-9]*\).*/\1/p' "$state" | head -n 1)"
    rounds="$(sed -n 's/^rounds *= *\([0-9][0-9]*\).*/\1/p' "$run_dir/config.toml" 2>/dev/null | head -n 1)"
    if [ -n "$next" ] && [ -n "$rounds" ] && [ "$next" -gt "$rounds" ]; then
      say "the run in $run_dir has finished ($rounds rounds; results in that directory)."
      say "to start another, point STRATA_RUN_DIR at a new directory."
      finished
    fi
    say "resuming the run in $run_dir at round ${next:-?}"
    set -- "$bin" server --resume "$run_dir" "$@"
  else
    say "starting a new run in $run_dir"
    if [ -n "${STRATA_CONFIG:-}" ]; then
      set -- "$bin" server --config "$STRATA_CONFIG" --out "$run_dir" "$@"
    else
      set -- "$bin" server --out "$run_dir" "$@"
    fi
  fi
  if [ "$when_done" = exit ]; then exec "$@"; fi
  supervise "$@" || exit $?
  finished
}

client() {
  local slots="${STRATA_STATE_SLOTS:-}" k lock fd=""
  rm -f "$done_marker"
  if [ -n "$slots" ]; then
    mkdir -p "$slots"
    for ((k = 0; k < ${STRATA_STATE_SLOTS_MAX:-1024}; k++)); do
      lock="$slots/slot-$k.lock"
      exec {fd}>>"$lock"
      if flock -n "$fd"; then break; fi
      exec {fd}>&-
      fd=""
    done
    if [ -z "$fd" ]; then
      say "no free state slot under $slots"
      exit 1
    fi
    # The lock fd stays open in this shell and in strata (exec keeps it): the slot is held
    # until the client exits.
    say "using state slot $slots/slot-$k"
    set -- "$bin" client --state-dir "$slots/slot-$k" "$@"
  else
    set -- "$bin" client "$@"
  fi
  if [ "$when_done" = exit ]; then exec "$@"; fi
  supervise "$@" || exit $?
  finished
}

case "${1:-}" in
  server) shift; server "$@" ;;
  client) shift; client "$@" ;;
  probe)
    shift
    if [ -f "$done_marker" ]; then exit 0; fi
    exec "$bin" health --http "${1:-http://127.0.0.1:9090/healthz}"
    ;;
  *) exec "$bin" "$@" ;;
esac
