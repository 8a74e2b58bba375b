#!/usr/bin/env bash
# Starts or stops a local 3-node stockraft cluster on loopback.
#
#   cluster/local.sh start     build (release) and start nodes 1-3 on 127.0.0.1:50051-50053
#   cluster/local.sh status    show members, leader, term and indexes
#   cluster/local.sh stop      stop the nodes (SIGTERM, graceful)
#   cluster/local.sh clean     stop and delete the data dirs and logs
#
# Data dirs and logs go to $STOCKRAFT_CLUSTER_DIR (default ./cluster-data).
# Metrics: 127.0.0.1:9465-9467. Override the binary with $STOCKRAFT_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${STOCKRAFT_CLUSTER_DIR:-./cluster-data}"
nodes=(1 2 3)
peers="1=127.0.0.1:50051,2=127.0.0.1:50052,3=127.0.0.1:50053"

bin() {
  if [ -n "${STOCKRAFT_BIN:-}" ]; then echo "$STOCKRAFT_BIN"; return; fi
  make -s release >&2
  echo "${CARGO_TARGET_DIR:-target}/release/stockraft"
}

start() {
  local b; b="$(bin)"
  mkdir -p "$dir"
  for i in "${nodes[@]}"; do
    if [ -f "$dir/node-$i.pid" ] && kill -0 "$(cat "$dir/node-$i.pid")" 2>/dev/null; then
      echo "node $i already running (pid $(cat "$dir/node-$i.pid"))"; continue
    fi
    "$b" serve --node-id "$i" --listen "127.0.0.1:5005$i" --data-dir "$dir/node-$i" \
      --peers "$peers" --metrics-listen "127.0.0.1:946$((4 + i))" \
      >"$dir/node-$i.log" 2>&1 &
    echo $! >"$dir/node-$i.pid"
    echo "node $i: 127.0.0.1:5005$i (pid $!, log $dir/node-$i.log)"
  done
  for _ in $(seq 1 100); do
    if "$b" cluster status --server 127.0.0.1:50051 >/dev/null 2>&1 \
       && "$b" cluster status --server 127.0.0.1:50051 --json | grep -q '"leader_id":[1-9]'; then
      "$b" cluster status --server 127.0.0.1:50051; return 0
    fi
    sleep 0.2
  done
  echo "the cluster did not elect a leader; see $dir/node-*.log" >&2; return 1
}

stop() {
  for i in "${nodes[@]}"; do
    local pidfile="$dir/node-$i.pid"
    [ -f "$pidfile" ] || continue
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "node $i stopped"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) "$(bin)" cluster status --server 127.0.0.1:50051 ;;
  clean) stop; rm -rf "$dir" ;;
  *) echo "usage: $0 start|status|stop|clean" >&2; exit 2 ;;
esac
