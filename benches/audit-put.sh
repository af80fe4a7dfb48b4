#!/usr/bin/env bash
# Single-node PUT throughput of two Cave binaries, interleaved (A, B, A, B, ...), each run on a fresh data
# directory: how much the audit trail costs a write (issue 10 item 7; target: at most 10% slower).
#
#   usage: benches/audit-put.sh BINARY_A BINARY_B [ROUNDS] [SECONDS] [CONNECTIONS]
#   prints each run's writes/s and CPU time of the Cave process per write (user + system, from
#   /proc/PID/stat), and the ratios of the medians (B / A). On a machine shared with other jobs the
#   throughput swings with their load; the CPU time per write is the steadier measure of the cost.
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
  cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  local before; before=$(cpu)
  wrk -t2 -c"$conns" -d"${secs}s" -s "$lua" http://127.0.0.1:23795 >"$tmp/wrk.out"
  local ticks=$(( $(cpu) - before )) hz; hz=$(getconf CLK_TCK)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  awk -v t="$ticks" -v hz="$hz" -v s="$secs" '/^Requests\/sec/ {r=$2} /Non-2xx/ {e=$NF}
    END {if (e > 0) {print "non-2xx: " e > "/dev/stderr"; exit 1} printf "%.0f %.1f\n", r, t / hz * 1e6 / (r * s)}' "$tmp/wrk.out"
}

as=() bs=() acpu=() bcpu=()
for i in $(seq 1 "$rounds"); do
  read -r r c < <(run "$a"); as+=("$r"); acpu+=("$c")
  read -r r c < <(run "$b"); bs+=("$r"); bcpu+=("$c")
  echo "round $i: A ${as[-1]} writes/s ${acpu[-1]} us CPU/write, B ${bs[-1]} writes/s ${bcpu[-1]} us CPU/write"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ma=$(median "${as[@]}") mb=$(median "${bs[@]}") ca=$(median "${acpu[@]}") cb=$(median "${bcpu[@]}")
awk -v a="$ma" -v b="$mb" -v ca="$ca" -v cb="$cb" 'BEGIN {
  printf "median A %.0f, B %.0f writes/s (B/A %.3f); CPU per write A %.1f, B %.1f us (B/A %.3f)\n", a, b, b / a, ca, cb, cb / ca }'
