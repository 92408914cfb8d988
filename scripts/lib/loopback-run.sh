# shellcheck shell=bash
# Shared by scripts/stress.sh and scripts/large-model.sh (sourced, not run): a FedAvg run on
# synthetic data with a server process and `strata client --virtual` processes on loopback,
# and the server's peak memory.

# loopback_config FILE ROUNDS CLIENTS SAMPLES MODEL LR: the run's config.
loopback_config() {
  cat > "$1" <<TOML
rounds = $2
clients = $3
min_clients = $3
fraction = 1.0
round_timeout_secs = 3600
seed = 1
method = "fedavg"

[data]
dataset = "synthetic"
split = "iid"

[data.synthetic]
samples = $4

[model]
name = "$5"

[train]
lr = $6
batch_size = 20
local_epochs = 1
TOML
}

# loopback_run BIN PORT CONFIG OUT PROCESSES PER_PROCESS [SERVER FLAGS...]: starts the server
# (logs in OUT/server.log, run in OUT/run) and the client processes (OUT/clients<p>.log), waits
# for the server, and sets `peak_kb` to its peak resident memory (VmHWM, sampled every 0.5 s).
# Returns the server's exit status.
loopback_run() {
  local bin="$1" port="$2" config="$3" out="$4" processes="$5" per="$6"
  shift 6
  "$bin" server --listen "127.0.0.1:$port" --config "$config" --out "$out/run" "$@" >"$out/server.log" 2>&1 &
  local server=$!
  local hosted=()
  for p in $(seq 1 "$processes"); do
    # LOOPBACK_POPULATION=1: each process is one host of virtual clients, not N daemons.
    if [ "${LOOPBACK_POPULATION:-0}" = 1 ]; then hosted=(--population --first-index $(((p - 1) * per))); fi
    "$bin" client --server "http://127.0.0.1:$port" --virtual "$per" --device cpu "${hosted[@]}" >"$out/clients$p.log" 2>&1 &
  done
  peak_kb=0
  local hwm
  while kill -0 "$server" 2>/dev/null; do
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$server/status" 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$peak_kb" ] && peak_kb=$hwm
    sleep 0.5
  done
  wait "$server"
}
