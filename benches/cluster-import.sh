#!/usr/bin/env bash
# Bulk load through a 3-node cluster on loopback: N keys of 100-byte values under bench/k0000000... imported
# into node 1 through /api/v1/import (NDJSON in batches), then the time until every node holds all of them.
# Prints the import's own rate (node 1 answered) and the cluster's (all three hold every key), from one run.
#
#   usage: benches/cluster-import.sh [CAVE_BINARY] [KEYS] [BATCH]
#   defaults: target/release/cave, 1000000 keys, 100000 lines per import request; TIMEOUT_S=600 seconds
#   for the other nodes to catch up. Nodes start as in ../shared/bench/cluster-bench.sh (prod mode, one seed
#   each, a fresh cluster key).
#   KEEP_LOGS=DIR keeps the nodes' logs there.
#   LATE=1: nodes 2 and 3 start only after node 1 has answered the import, so that everything they get comes
#   by anti-entropy (new nodes joining a loaded cluster); the figures are then the time from their start.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cave=${1:-$repo/target/release/cave}
keys=${2:-1000000}
batch=${3:-100000}
timeout_s=${TIMEOUT_S:-600}
[ -x "$cave" ] || { echo "no Cave binary at $cave (build with cargo build --release)" >&2; exit 2; }
tmp=$(mktemp -d); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "${KEEP_LOGS:-}" ] || { mkdir -p "$KEEP_LOGS"; cp "$tmp"/cave*.log "$KEEP_LOGS"/; }
  rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s.%N; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
live_keys() {
  curl -sf -H "$auth" "http://$1/api/v1/system/info" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("keys", d.get("live_keys", 0)))'
}

python3 - "$tmp" "$keys" "$batch" <<'PY'
import json, sys, time
tmp, keys, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
value = "v" * 100
version = f"{int(time.time() * 1000) << 16}-00000000000000b1"
for start in range(0, keys, batch):
    with open(f"{tmp}/import-{start // batch:05d}.ndjson", "w") as f:
        for i in range(start, min(start + batch, keys)):
            f.write(json.dumps({"key": f"bench/k{i:07d}", "value": value, "version": version}) + "\n")
PY

key=$(head -c 32 /dev/urandom | base64)
token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
auth="Authorization: Bearer $token"
start_node() {
  "$cave" --mode=prod --http-addr "127.0.0.1:2491$1" --grpc-addr "127.0.0.1:2492$1" --data-dir "$tmp/cave$1" \
    --cluster-key "$key" --acl-root-token "$token" --mdns=false --max-request-bytes 64MiB "${@:2}" \
    >"$tmp/cave$1.log" 2>&1 &
  pids+=($!)
}
start_peers() {
  start_node 1 --peers 127.0.0.1:24920
  start_node 2 --peers 127.0.0.1:24921
  for p in 24911 24912; do wait_http "http://127.0.0.1:$p/healthz"; done
  # The three know each other before the load starts.
  for _ in $(seq 1 300); do
    members=$(curl -sf -H "$auth" http://127.0.0.1:24912/api/v1/cluster/nodes | python3 -c \
      'import json,sys; d=json.load(sys.stdin); m=d.get("nodes", d) if isinstance(d, dict) else d; print(len(m))' \
      2>/dev/null || echo 0)
    [ "$members" -ge 3 ] && break
    sleep 0.1
  done
}
late=${LATE:-0}
start_node 0
wait_http http://127.0.0.1:24910/healthz
[ "$late" = 1 ] || start_peers

t0=$(now)
for f in "$tmp"/import-*.ndjson; do
  curl -sf -X POST -H "$auth" -H 'Content-Type: application/x-ndjson' --data-binary "@$f" \
    http://127.0.0.1:24910/api/v1/import >/dev/null
done
t1=$(now)
if [ "$late" = 1 ]; then
  printf 'import into node 1 alone: %.2f s; starting nodes 2 and 3\n' "$(echo "$t1 - $t0" | bc -l)"
  t0=$(now)
  start_peers
  t1=$t0
fi
deadline=$(echo "$t1 + $timeout_s" | bc -l)
held=(0 0 0)
while :; do
  for i in 0 1 2; do held[$i]=$(live_keys "127.0.0.1:2491$i" || echo 0); done
  [ "${held[0]}" -ge "$keys" ] && [ "${held[1]}" -ge "$keys" ] && [ "${held[2]}" -ge "$keys" ] && break
  if [ "$(echo "$(now) > $deadline" | bc -l)" = 1 ]; then
    echo "not converged after ${timeout_s} s: nodes hold ${held[*]}" >&2
    for i in 0 1 2; do echo "--- node $((i + 1)), last warnings:"; grep -E 'WARN|ERROR' "$tmp/cave$i.log" | tail -5; done >&2
    exit 1
  fi
  sleep 0.2
done
t2=$(now)
import_s=$(echo "$t1 - $t0" | bc -l)
all_s=$(echo "$t2 - $t0" | bc -l)
printf 'keys %d, %d per request\n' "$keys" "$batch"
if [ "$late" = 1 ]; then
  printf 'nodes 2 and 3 hold all: %.2f s after they started, %.0f entries/s\n' "$all_s" "$(echo "$keys / $all_s" | bc -l)"
else
  printf 'import into node 1: %.2f s, %.0f entries/s\n' "$import_s" "$(echo "$keys / $import_s" | bc -l)"
  printf 'every node holds all: %.2f s after the first request, %.0f entries/s\n' "$all_s" "$(echo "$keys / $all_s" | bc -l)"
fi
