#!/usr/bin/env bash
# Single-node PUT cost of two Cave commands, interleaved (A, B, A, B, ...), each run on a fresh data directory:
# writes/s, CPU time of the Cave process per write (user + system, /proc/PID/stat) and context switches per
# write (voluntary + involuntary, summed over the process's threads from /proc/PID/task/*/status: every
# cross-thread wake-up costs one). On a machine shared with other jobs throughput and CPU time swing with
# their load; the context switches per write are a count and much steadier.
#
#   usage: benches/write-ab.sh 'COMMAND_A' 'COMMAND_B' [ROUNDS] [SECONDS] [CONNECTIONS]
#   a command is a Cave binary with optional leading VAR=value words (e.g. 'TOKIO_WORKER_THREADS=1 target/release/cave')
# Uses wrk with ../shared/bench/cave_put.lua (POST of a 100-byte value to a random key among $KEYS).
set -euo pipefail
a=$1 b=$2 rounds=${3:-3} secs=${4:-10} conns=${5:-64}
lua=${LUA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench/cave_put.lua}
export KEYS=${KEYS:-100000}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

switches() { cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

run() { # COMMAND -> writes/s, CPU us per write, context switches per write
  rm -rf "$tmp/data"
  # shellcheck disable=SC2086  # the command is a list of words
  env $1 --mode=dev --http-addr 127.0.0.1:23796 --data-dir "$tmp/data" >"$tmp/cave.log" 2>&1 & pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:23796/healthz && break; sleep 0.1; done
  local before_cpu before_sw; before_cpu=$(cpu); before_sw=$(switches)
  wrk -t2 -c"$conns" -d"${secs}s" -s "$lua" http://127.0.0.1:23796 >"$tmp/wrk.out"
  local ticks=$(( $(cpu) - before_cpu )) sw=$(( $(switches) - before_sw )) hz; hz=$(getconf CLK_TCK)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  awk -v t="$ticks" -v hz="$hz" -v s="$secs" -v sw="$sw" '/^Requests\/sec/ {r=$2} /Non-2xx/ {e=$NF}
    END {if (e > 0) {print "non-2xx: " e > "/dev/stderr"; exit 1}
         printf "%.0f %.1f %.2f\n", r, t / hz * 1e6 / (r * s), sw / (r * s)}' "$tmp/wrk.out"
}

as=() bs=() acpu=() bcpu=() asw=() bsw=()
for i in $(seq 1 "$rounds"); do
  read -r r c w < <(run "$a"); as+=("$r"); acpu+=("$c"); asw+=("$w")
  read -r r c w < <(run "$b"); bs+=("$r"); bcpu+=("$c"); bsw+=("$w")
  echo "round $i: A ${as[-1]}/s ${acpu[-1]} us ${asw[-1]} switches per write; B ${bs[-1]}/s ${bcpu[-1]} us ${bsw[-1]} switches per write"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ma=$(median "${as[@]}") mb=$(median "${bs[@]}") ca=$(median "${acpu[@]}") cb=$(median "${bcpu[@]}")
wa=$(median "${asw[@]}") wb=$(median "${bsw[@]}")
awk -v a="$ma" -v b="$mb" -v ca="$ca" -v cb="$cb" -v wa="$wa" -v wb="$wb" 'BEGIN {
  printf "medians: writes/s A %.0f B %.0f (B/A %.3f); CPU us per write A %.1f B %.1f (B/A %.3f); switches per write A %.2f B %.2f (B/A %.3f)\n",
    a, b, b / a, ca, cb, cb / ca, wa, wb, wb / wa }'
