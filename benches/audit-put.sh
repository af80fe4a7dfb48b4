#!/usr/bin/env bash
# Single-node PUT throughput of two Cave binaries, interleaved (A, B, A, B, ...), each run on a fresh data
# directory: how much the audit trail costs a write (issue 10 item 7; target: at most 10% slower).
#
#   usage: benches/audit-put.sh BINARY_A BINARY_B [ROUNDS] [SECONDS] [CONNECTIONS]
#   prints each run's writes/s and the ratio of the medians (B / A)
# Uses wrk with ../shared/bench/cave_put.lua (POST of a 100-byte value to a random key among $KEYS).
set -euo pipefail
a=$1 b=$2 rounds=${3:-3} secs=${4:-10} conns=${5:-64}
lua=${LUA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench/cave_put.lua}
export KEYS=${KEYS:-100000}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

run() { # BINARY -> writes/s
  rm -rf "$tmp/data"
  "$1" --mode=dev --http-addr 127.0.0.1:23795 --data-dir "$tmp/data" >"$tmp/cave.log" 2>&1 & pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:23795/healthz && break; sleep 0.1; done
  wrk -t2 -c"$conns" -d"${secs}s" -s "$lua" http://127.0.0.1:23795 >"$tmp/wrk.out"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  awk '/^Requests\/sec/ {r=$2} /Non-2xx/ {e=$NF} END {if (e > 0) {print "non-2xx: " e > "/dev/stderr"; exit 1} print r+0}' "$tmp/wrk.out"
}

as=() bs=()
for i in $(seq 1 "$rounds"); do
  as+=("$(run "$a")"); bs+=("$(run "$b")")
  echo "round $i: A ${as[-1]} writes/s, B ${bs[-1]} writes/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ma=$(median "${as[@]}") mb=$(median "${bs[@]}")
awk -v a="$ma" -v b="$mb" 'BEGIN {printf "median A %.0f, B %.0f writes/s; B/A = %.3f\n", a, b, b / a}'
