#!/usr/bin/env bash
# Lock acquire + release round trips on three local nodes, Cave beside a 3-member etcd, same run: one client,
# sequential rounds on persistent connections through node 1 of each (benches/lock/rtt.py; etcd through its
# v3 lock API, which `etcdctl lock` calls), then the same through the command line (`etcdctl lock NAME true`
# against two `curl`s per round), process start-up included. Prints p50/p99 per round trip and the ratios.
#
#   usage: benches/lock-bench.sh [CAVE_BINARY] [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cave=${1:-target/release/cave}
rounds=${2:-2000}
cli_rounds=${CLI_ROUNDS:-200}
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
if [ ${#need[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null
fi
[ -x "$cave" ] || { echo "no Cave binary at $cave (cargo build --release)" >&2; exit 2; }
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

members="l1=http://127.0.0.1:25800,l2=http://127.0.0.1:25801,l3=http://127.0.0.1:25802"
for i in 0 1 2; do
  etcd --name l$((i+1)) --data-dir "$tmp/etcd$i" --listen-client-urls http://127.0.0.1:2579$i \
    --advertise-client-urls http://127.0.0.1:2579$i --listen-peer-urls http://127.0.0.1:2580$i \
    --initial-advertise-peer-urls http://127.0.0.1:2580$i --initial-cluster "$members" \
    --initial-cluster-state new >"$tmp/etcd$i.log" 2>&1 & pids+=($!)
done
key=$("$cave" keygen)
for i in 0 1 2; do
  peers=$(for j in 0 1 2; do if [ "$j" != "$i" ]; then printf '127.0.0.1:2582%s,' "$j"; fi; done)
  CAVE_CLUSTER_KEY=$key "$cave" --http-addr 127.0.0.1:2581$i --grpc-addr 127.0.0.1:2582$i \
    --data-dir "$tmp/cave$i" --peers "${peers%,}" --mdns=false --cluster-size 3 >"$tmp/cave$i.log" 2>&1 & pids+=($!)
done
for p in 25790 25791 25792; do wait_http http://127.0.0.1:$p/version; done
for p in 25810 25811 25812; do wait_http http://127.0.0.1:$p/healthz; done
# Members found and clocks judged before the first attempt (a lock needs both).
lease=$(curl -s -X POST -H 'Content-Type: application/json' -d '{"ttl":"1h"}' http://127.0.0.1:25810/api/v1/lease \
  | sed 's/.*"id":"\([0-9a-f]*\)".*/\1/')
for _ in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d "{\"lease\":\"$lease\"}" http://127.0.0.1:25810/api/v1/lock/bench/ready)
  [ "$code" = 200 ] && break; sleep 0.1
done

read -r e50 e99 erate < <(python3 "$here/lock/rtt.py" etcd 127.0.0.1:25790 "$rounds")
read -r c50 c99 crate < <(python3 "$here/lock/rtt.py" cave 127.0.0.1:25810 "$rounds")

cli() { # seconds for $cli_rounds rounds of "$@"
  local start end; start=$(date +%s.%N)
  for _ in $(seq 1 "$cli_rounds"); do "$@" >/dev/null; done
  end=$(date +%s.%N); awk -v s="$start" -v e="$end" -v n="$cli_rounds" 'BEGIN { printf "%.2f", (e - s) * 1000 / n }'
}
cave_cli() {
  curl -sf -X POST -H 'Content-Type: application/json' -d "{\"lease\":\"$lease\"}" http://127.0.0.1:25810/api/v1/lock/bench/cli
  curl -sf -X DELETE "http://127.0.0.1:25810/api/v1/lock/bench/cli?lease=$lease"
}
ecli=$(cli etcdctl --endpoints=http://127.0.0.1:25790 lock bench/cli true)
ccli=$(cli cave_cli)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
printf '%-52s %10s %10s %8s\n' "3 nodes on loopback, acquire + release, $rounds rounds" "Cave" "etcd 3.4" "Cave/etcd"
printf '%-52s %10s %10s %8s\n' "p50 round trip, ms" "$c50" "$e50" "$(ratio "$c50" "$e50")"
printf '%-52s %10s %10s %8s\n' "p99 round trip, ms" "$c99" "$e99" "$(ratio "$c99" "$e99")"
printf '%-52s %10s %10s %8s\n' "rounds/s, one client" "$crate" "$erate" "$(ratio "$crate" "$erate")"
printf '%-52s %10s %10s %8s\n' "command line: ms per round ($cli_rounds rounds)" "$ccli" "$ecli" "$(ratio "$ccli" "$ecli")"
