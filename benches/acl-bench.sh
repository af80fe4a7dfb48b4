#!/usr/bin/env bash
# Access control's cost: one Cave with --acl=false and one with --acl=true, in the same run, under the same
# load (wrk with the peer benchmark's scripts: random 100-byte writes and reads over 100k filled keys),
# interleaved round by round so that both see the same machine. With ACL on, requests carry a token of a
# policy on bench/ (the ordinary case: a hash, a map lookup and a prefix rule per request), not the root token.
#
#   usage: benches/acl-bench.sh [CAVE_BINARY] [SECONDS] [CONNECTIONS] [ROUNDS]
#   BENCH_DIR: the peer benchmark's scripts (default ../shared/bench next to the repository)
#   prints each round and the medians, and writes them as JSON to ${OUT:-acl-bench.json}
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$repo/../shared/bench}
cave=${1:-$repo/target/release/cave}
secs=${2:-10}
conns=${3:-64}
rounds=${4:-3}
out=${OUT:-acl-bench.json}
export KEYS=${KEYS:-100000}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
[ -x "$cave" ] || { echo "no Cave binary at $cave (build with cargo build --release)" >&2; exit 2; }
[ -f "$bench/cave_get.lua" ] || { echo "no peer benchmark scripts in $bench (set BENCH_DIR)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
# one wrk run: "REQUESTS_PER_SECOND NON_2XX_RESPONSES"
load() {
  wrk -t2 -c"$conns" -d"${secs}s" -s "$bench/$1" "$2" >"$tmp/wrk.out"
  awk '/^Requests\/sec/ {r=$2} /Non-2xx/ {e=$NF} END {print r+0, e+0}' "$tmp/wrk.out"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

root=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
"$cave" --mode=dev --http-addr 127.0.0.1:23801 --data-dir "$tmp/off" --acl=false >"$tmp/off.log" 2>&1 & pids+=($!)
CAVE_ACL_ROOT_TOKEN=$root "$cave" --mode=dev --http-addr 127.0.0.1:23802 --data-dir "$tmp/on" --acl=true \
  >"$tmp/on.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.1:23801/healthz
wait_http http://127.0.0.1:23802/healthz

# The token of the ACL-on node: a policy on bench/, made with the root token.
curl -sf -X PUT -H "Authorization: Bearer $root" -H 'Content-Type: application/json' \
  --data '{"rules":[{"prefix":"bench/","allow":["read","write","list"]}]}' \
  http://127.0.0.1:23802/api/v1/acl/policies/bench >/dev/null
token=$(curl -sf -X POST -H "Authorization: Bearer $root" -H 'Content-Type: application/json' \
  --data '{"policies":["bench"],"description":"benchmark"}' http://127.0.0.1:23802/api/v1/acl/tokens |
  sed -E 's/.*"token":"([^"]+)".*/\1/')
# Access control is really on: no token is refused, the token is accepted.
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:23802/api/v1/kv/bench/key1)" = 401 ] ||
  { echo "the ACL node answers without a token" >&2; exit 1; }

"$bench/fill.py" cave 127.0.0.1:23801 "$KEYS"
CAVE_TOKEN=$token "$bench/fill.py" cave 127.0.0.1:23802 "$KEYS"

declare -a off_put on_put off_get on_get
errors=0
for r in $(seq 1 "$rounds"); do
  read -r a e1 < <(load cave_put.lua http://127.0.0.1:23801)
  read -r b e2 < <(CAVE_TOKEN=$token load cave_put.lua http://127.0.0.1:23802)
  read -r c e3 < <(load cave_get.lua http://127.0.0.1:23801)
  read -r d e4 < <(CAVE_TOKEN=$token load cave_get.lua http://127.0.0.1:23802)
  errors=$((errors + e1 + e2 + e3 + e4))
  off_put+=("$a"); on_put+=("$b"); off_get+=("$c"); on_get+=("$d")
  printf 'round %s: writes/s off %s on %s   reads/s off %s on %s\n' "$r" "$a" "$b" "$c" "$d"
done
[ "$errors" = 0 ] || { echo "$errors non-2xx answers during the load" >&2; exit 1; }
mp=$(median "${off_put[@]}"); np=$(median "${on_put[@]}"); mg=$(median "${off_get[@]}"); ng=$(median "${on_get[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf 'median of %s rounds, %s conns, %ss each: writes/s off %s on %s (%s)   reads/s off %s on %s (%s)\n' \
  "$rounds" "$conns" "$secs" "$mp" "$np" "$(ratio "$np" "$mp")" "$mg" "$ng" "$(ratio "$ng" "$mg")"
cat >"$out" <<JSON
{"seconds": $secs, "connections": $conns, "rounds": $rounds,
 "acl_off": {"writes": $mp, "reads": $mg}, "acl_on": {"writes": $np, "reads": $ng},
 "ratio_on_off": {"writes": $(ratio "$np" "$mp"), "reads": $(ratio "$ng" "$mg")}}
JSON
