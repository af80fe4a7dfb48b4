#!/usr/bin/env bash
# CPU time one Cave process spends per HTTP request, and its requests/s, for each binary given, interleaved
# (A, B, A, B, ...): a fresh dev node on a fresh data directory per figure, wrk with 64 connections.
# CPU per request = the process's utime + stime (/proc/PID/stat) over the run, divided by the requests wrk
# counted; on a shared machine it swings far less than requests/s.
#
#   usage: benches/cpu-per-request.sh TARGET ROUNDS SECONDS BINARY...
#   TARGET: a path (e.g. /healthz) or one of ../shared/bench's wrk scripts (cave_get.lua, cave_put.lua),
#   which use keys bench/key0..$KEYS-1 (filled first; KEYS defaults to 1000)
set -euo pipefail
target=$1 rounds=$2 secs=$3; shift 3
bench=$(cd "$(dirname "$0")/../.." && pwd)/shared/bench
export KEYS=${KEYS:-1000}
port=23797
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    rm -rf "$tmp/data"
    "$bin" --mode=dev --http-addr 127.0.0.1:$port --data-dir "$tmp/data" >"$tmp/cave.log" 2>&1 & pid=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.1; done
    args=(http://127.0.0.1:$port"$target")
    if [[ $target == *.lua ]]; then
      "$bench/fill.py" cave 127.0.0.1:$port "$KEYS" >/dev/null 2>&1
      args=(-s "$bench/$target" http://127.0.0.1:$port)
    fi
    before=$(cpu)
    wrk -t2 -c64 -d"${secs}s" "${args[@]}" >"$tmp/wrk.out"
    ticks=$(( $(cpu) - before ))
    awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" -v bin="$bin" -v round="$round" -v target="$target" '
      /requests in/ {n = $1} /^Requests\/sec/ {r = $2} /Non-2xx/ {e = $NF}
      END {printf "round %d  %-32s %-14s %9.0f req/s  %6.1f us CPU/request  non-2xx %d\n", round, bin, target, r, ticks / hz * 1e6 / n, e}' "$tmp/wrk.out"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
done
