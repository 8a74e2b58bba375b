#!/usr/bin/env bash
# Starts or stops a local 3-node stockraft cluster on loopback, secured as a
# real one is: clients over TLS with a token, members over mutual TLS on ports
# of their own.
#
#   cluster/local.sh start     build (release) and start nodes 1-3: clients on
#                              127.0.0.1:51051-51053, members on 51061-51063
#   cluster/local.sh status    show members, leader, term and indexes
#   cluster/local.sh stop      stop the nodes (SIGTERM, graceful)
#   cluster/local.sh clean     stop and delete the data dirs, logs, certificates and token
#
# The first start makes, in $STOCKRAFT_CLUSTER_DIR (default ./cluster-data):
# certs/ (`stockraft certs`: a CA, member-1..3 and a client certificate
# `ops`), tokens (the tokens file) and admin.token (an admin token, mode 600).
# Data dirs and logs go there too. Metrics: 127.0.0.1:9471-9473 (plaintext).
# The ports stay clear of `make run` (127.0.0.1:50051, metrics 9464).
# Override the binary with $STOCKRAFT_BIN.
set -euo pipefail

# Paths given relative to where the script was called from.
if [ -n "${STOCKRAFT_BIN:-}" ] && [ "${STOCKRAFT_BIN#/}" = "$STOCKRAFT_BIN" ] && [ -e "$STOCKRAFT_BIN" ]; then
  STOCKRAFT_BIN="$PWD/$STOCKRAFT_BIN"
fi
dir="${STOCKRAFT_CLUSTER_DIR:-}"
if [ -n "$dir" ] && [ "${dir#/}" = "$dir" ]; then dir="$PWD/$dir"; fi
cd "$(dirname "$0")/.."
dir="${dir:-$PWD/cluster-data}"

nodes=(1 2 3)
client_port() { echo $((51050 + $1)); }
peer_port() { echo $((51060 + $1)); }
metrics_port() { echo $((9470 + $1)); }
peers=""
for i in "${nodes[@]}"; do
  peers+="${peers:+,}$i=127.0.0.1:$(client_port "$i")/127.0.0.1:$(peer_port "$i")"
done
first="127.0.0.1:$(client_port 1)"

bin() {
  if [ -n "${STOCKRAFT_BIN:-}" ]; then echo "$STOCKRAFT_BIN"; return; fi
  make -s release >&2
  local target="${CARGO_TARGET_DIR:-target}"
  case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
  echo "$target/release/stockraft"
}

# The CLI as an administrator of this cluster.
client() {
  STOCKRAFT_TLS_CA="$dir/certs/ca.pem" STOCKRAFT_TOKEN="$(cat "$dir/admin.token")" "$@"
}

# Certificates and the admin token, made once.
secure() {
  local b="$1"
  if [ ! -f "$dir/certs/ca.pem" ]; then
    "$b" certs --dir "$dir/certs" --members "$(IFS=,; echo "${nodes[*]}")" \
      --hosts localhost,127.0.0.1,::1 --clients ops >/dev/null
    echo "certificates: $dir/certs (CA $dir/certs/ca.pem)"
  fi
  if [ ! -f "$dir/tokens" ] || [ ! -s "$dir/admin.token" ]; then
    local out
    out="$("$b" token --role admin --name local-admin)"
    (
      umask 077
      printf '%s\n' "$out" | sed -n 's/^token: //p' >"$dir/admin.token"
      printf '%s\n' "$out" | sed -n 's/^tokens file line: //p' >"$dir/tokens"
    )
    echo "admin token: $dir/admin.token (tokens file $dir/tokens)"
  fi
}

start() {
  local b; b="$(bin)"
  mkdir -p "$dir"
  secure "$b"
  for i in "${nodes[@]}"; do
    if [ -f "$dir/node-$i.pid" ] && kill -0 "$(cat "$dir/node-$i.pid")" 2>/dev/null; then
      echo "node $i already running (pid $(cat "$dir/node-$i.pid"))"; continue
    fi
    "$b" serve --member-id "$i" --data-dir "$dir/node-$i" \
      --listen "127.0.0.1:$(client_port "$i")" --peer-listen "127.0.0.1:$(peer_port "$i")" \
      --peers "$peers" --metrics-listen "127.0.0.1:$(metrics_port "$i")" \
      --tls-cert "$dir/certs/member-$i.pem" --tls-key "$dir/certs/member-$i.key" \
      --peer-cert "$dir/certs/member-$i.pem" --peer-key "$dir/certs/member-$i.key" \
      --peer-ca "$dir/certs/ca.pem" --tokens "$dir/tokens" \
      >"$dir/node-$i.log" 2>&1 &
    echo $! >"$dir/node-$i.pid"
    echo "node $i: 127.0.0.1:$(client_port "$i"), peers 127.0.0.1:$(peer_port "$i") (pid $!, log $dir/node-$i.log)"
  done
  for _ in $(seq 1 100); do
    if client "$b" cluster status --server "$first" --json 2>/dev/null | grep -q '"leader_id":[1-9]'; then
      client "$b" cluster status --server "$first"
      cat <<EOF

Call it with the CA and the admin token (any node takes any call):
  stockraft avail SKU-1 --server $first --tls-ca $dir/certs/ca.pem --token \$(cat $dir/admin.token)
or set them once:
  export STOCKRAFT_TLS_CA=$dir/certs/ca.pem STOCKRAFT_TOKEN=\$(cat $dir/admin.token) STOCKRAFT_SERVER=$first
EOF
      return 0
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

status() {
  if [ ! -f "$dir/admin.token" ]; then
    echo "no cluster in $dir: run $0 start" >&2; return 1
  fi
  client "$(bin)" cluster status --server "$first"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  clean) stop; rm -rf "$dir" ;;
  *) echo "usage: $0 start|status|stop|clean" >&2; exit 2 ;;
esac
