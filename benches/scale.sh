#!/usr/bin/env bash
# One node holding many keys, beside Redis in the same run: N keys of 100-byte values under
# bench/k0000000..., loaded into Cave through /api/v1/import (NDJSON in batches) and into Redis through
# `redis-cli --pipe`. Prints, from one run: the import rate, both resident set sizes and their ratio, the
# process's own memory figure from /api/v1/system/info, and the time a restart takes to answer /readyz 200.
#
#   usage: benches/scale.sh [CAVE_BINARY] [KEYS] [BATCH]
#   defaults: target/release/cave, 1000000 keys, 100000 lines per import request; SETTLE_S=3 seconds before
#   each resident-set reading (the process gives freed memory back every 2 s)
#   MAX_REQUEST (default 64MiB) is Cave's --max-request-bytes, for BATCH sizes past 64 MiB of NDJSON;
#   installs redis-server from Debian when it is missing; writes the figures as JSON to ${OUT:-scale.json}
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cave=${1:-$repo/target/release/cave}
keys=${2:-1000000}
batch=${3:-100000}
out=${OUT:-scale.json}
# Seconds to wait before reading a settled resident set (after the import, after the restart).
SETTLE_S=${SETTLE_S:-3}
http=127.0.0.1:23901
redis_port=23902
[ -x "$cave" ] || { echo "no Cave binary at $cave (build with cargo build --release)" >&2; exit 2; }
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
now() { date +%s.%N; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# anonymous (heap) and file-backed (the memory-mapped database) parts of the RSS, in MB
rss_parts() { awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "anon %.0f MB, file %.0f MB", a/1024, f/1024}' "/proc/$1/status"; }
wait_ready() {
  for _ in $(seq 1 6000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$http/readyz")" = 200 ] && return 0
    sleep 0.01
  done
  echo "no 200 from /readyz" >&2; return 1
}
start_cave() {
  "$cave" --mode=dev --http-addr "$http" --grpc-addr 127.0.0.1:23903 --data-dir "$tmp/cave" \
    --max-request-bytes "${MAX_REQUEST:-64MiB}" >>"$tmp/cave.log" 2>&1 &
  cave_pid=$!
  pids+=("$cave_pid")
}

# The import batches and the Redis protocol stream, made before anything is timed.
python3 - "$tmp" "$keys" "$batch" <<'EOF'
import json, sys, time
tmp, keys, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
value = "v" * 100
version = f"{int(time.time() * 1000) << 16}-00000000000000b1"
with open(f"{tmp}/redis.proto", "w") as proto:
    for start in range(0, keys, batch):
        with open(f"{tmp}/import-{start // batch:05d}.ndjson", "w") as f:
            for i in range(start, min(start + batch, keys)):
                key = f"bench/k{i:07d}"
                f.write(json.dumps({"key": key, "value": value, "version": version}) + "\n")
                proto.write(f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n${len(value)}\r\n{value}\r\n")
EOF

start_cave
wait_ready
t0=$(now)
for f in "$tmp"/import-*.ndjson; do
  curl -sf -X POST -H 'Content-Type: application/x-ndjson' --data-binary "@$f" "http://$http/api/v1/import" >/dev/null
done
t1=$(now)
import_s=$(echo "$t1 - $t0" | bc -l)
peak_rss_kb=$(rss_kb "$cave_pid")
# The resident set once the process has given back what it freed (its allocator purger runs every 2 s).
sleep "$SETTLE_S"
cave_rss_kb=$(rss_kb "$cave_pid")
cave_parts=$(rss_parts "$cave_pid")
info=$(curl -sf "http://$http/api/v1/system/info")
live=$(echo "$info" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("keys", d.get("live_keys", "?")))')
memory_bytes=$(echo "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("memory_bytes", 0))')

kill -TERM "$cave_pid"; wait "$cave_pid" || true
t2=$(now)
start_cave
wait_ready
t3=$(now)
restart_s=$(echo "$t3 - $t2" | bc -l)
sleep "$SETTLE_S"
restart_rss_kb=$(rss_kb "$cave_pid")
restart_parts=$(rss_parts "$cave_pid")

redis-server --port "$redis_port" --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 1 200); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$redis_port" --pipe <"$tmp/redis.proto" >/dev/null
redis_keys=$(redis-cli -p "$redis_port" dbsize)
redis_rss_kb=$(rss_kb "$redis_pid")

ratio=$(echo "$cave_rss_kb / $redis_rss_kb" | bc -l)
restart_ratio=$(echo "$restart_rss_kb / $redis_rss_kb" | bc -l)
rate=$(echo "$keys / $import_s" | bc -l)
printf 'keys %d (cave live: %s, redis: %s)\n' "$keys" "$live" "$redis_keys"
printf 'import: %.2f s, %.0f entries/s\n' "$import_s" "$rate"
printf 'RSS after import (%s s later): cave %.0f MB (%s; %.0f MB when the import answered), redis %.0f MB, ratio %.2fx (system/info memory_bytes %.0f MB)\n' \
  "$SETTLE_S" "$(echo "$cave_rss_kb / 1024" | bc -l)" "$cave_parts" "$(echo "$peak_rss_kb / 1024" | bc -l)" \
  "$(echo "$redis_rss_kb / 1024" | bc -l)" "$ratio" "$(echo "$memory_bytes / 1048576" | bc -l)"
printf 'restart to readyz: %.2f s; RSS after restart (%s s after ready) %.0f MB (%s), ratio %.2fx\n' "$restart_s" "$SETTLE_S" \
  "$(echo "$restart_rss_kb / 1024" | bc -l)" "$restart_parts" "$restart_ratio"
cat >"$out" <<EOF
{"keys": $keys, "import_s": $import_s, "import_per_s": $rate, "cave_rss_kb": $cave_rss_kb, "peak_rss_kb": $peak_rss_kb,
 "redis_rss_kb": $redis_rss_kb, "rss_ratio": $ratio, "memory_bytes": $memory_bytes, "restart_s": $restart_s,
 "restart_rss_kb": $restart_rss_kb, "restart_rss_ratio": $restart_ratio}
EOF
