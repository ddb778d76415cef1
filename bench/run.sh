#!/usr/bin/env bash
# Runs one veche-bench workload against a release node of its own, several times, and prints
# each run and the median of every figure, with the disk's fsync rate measured before.
#
#   bench/run.sh room --senders 1 --receivers 10 --window 32 --messages 10000
#   RUNS=5 bench/run.sh idle --connections 2000
#
# Each run gets a new node in a new temporary data folder (so memory figures start from a
# fresh process), with the default configuration except: loopback addresses, and the
# per-address caps raised so that thousands of connections from this one address are
# accepted (server.max_connections_per_ip, server.max_unauthenticated_per_ip and
# auth.ip_failures_per_minute, which counts logins under way). Those caps are raised for the
# benchmark only; a production node keeps its defaults.
#
# Environment: RUNS (default 3), PORT (default 4499), NO_BUILD=1 to use the binaries already
# built, CARGO_TARGET_DIR as for cargo, BIN_DIR for binaries elsewhere (with NO_BUILD=1),
# JSON=file to also keep the JSON lines there, and NODE_ENV="VAR=value ..." for variables to
# start the node with (e.g. MALLOC_ARENA_MAX=2).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}
runs=${RUNS:-3}
port=${PORT:-4499}

if [ "$#" -eq 0 ]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
if [ -z "${NO_BUILD:-}" ]; then
    (cd "$root" && cargo build --release --locked -p veche-node -p veche-bench --bins)
fi

json=${JSON:-$(mktemp)}
work=$(mktemp -d)
node_pid=""
stop_node() {
    if [ -n "$node_pid" ]; then
        kill "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
        node_pid=""
    fi
}
cleanup() {
    stop_node
    rm -rf "$work"
    if [ -z "${JSON:-}" ]; then rm -f "$json"; fi
}
trap cleanup EXIT

start_node() {
    local data=$1
    mkdir -p "$data"
    cat > "$data/config.toml" <<CONFIG
[node]
name = "bench.local"

[server]
listen = "127.0.0.1:$port"
# Raised for the benchmark only: every client of the generator comes from 127.0.0.1.
max_connections_per_ip = 100000
max_unauthenticated_per_ip = 10000

[auth]
# Logins under way count as failures until they end; raised for the benchmark only.
ip_failures_per_minute = 100000

[http]
listen = "127.0.0.1:0"

[federation]
listen = ["/ip4/127.0.0.1/tcp/0"]

[log]
level = "warn"
CONFIG
    # shellcheck disable=SC2086
    env ${NODE_ENV:-} "$bin/veche" serve --data "$data" > "$data/node.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 300); do
        if [ -S "$data/admin.sock" ]; then return 0; fi
        if ! kill -0 "$node_pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "the node did not start; its log:" >&2
    cat "$data/node.log" >&2
    exit 1
}

"$bin/veche-bench" fsync --dir "$work" --json "$json"
for run in $(seq "$runs"); do
    data="$work/node-$run"
    start_node "$data"
    "$bin/veche-bench" --addr "127.0.0.1:$port" --data "$data" --node-pid "$node_pid" \
        --json "$json" "$@"
    stop_node
    rm -rf "$data"
done
"$bin/veche-bench" median "$json" --last "$runs"
