#!/usr/bin/env python3
"""Lock acquire/release round trips, one client on persistent HTTP connections: Cave or etcd's v3 lock API
(what `etcdctl lock` calls). Prints "p50_ms p99_ms rounds_per_s".

  usage: rtt.py cave|etcd HOST:PORT ROUNDS
"""
import base64
import http.client
import json
import sys
import time


def call(conn, method, path, body):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else {}


def cave(conn, rounds):
    lease = call(conn, "POST", "/api/v1/lease", {"ttl": "1h"})["id"]
    call(conn, "POST", "/api/v1/lock/bench/warm", {"lease": lease})
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        call(conn, "POST", "/api/v1/lock/bench/lock", {"lease": lease})
        call(conn, "DELETE", f"/api/v1/lock/bench/lock?lease={lease}", None)
        times.append(time.perf_counter() - t)
    return times


def etcd(conn, rounds):
    lease = call(conn, "POST", "/v3/lease/grant", {"TTL": 3600})["ID"]
    name = base64.b64encode(b"bench/lock").decode()
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        key = call(conn, "POST", "/v3/lock/lock", {"name": name, "lease": lease})["key"]
        call(conn, "POST", "/v3/lock/unlock", {"key": key})
        times.append(time.perf_counter() - t)
    return times


def main():
    kind, addr, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    started = time.perf_counter()
    times = sorted((cave if kind == "cave" else etcd)(conn, rounds))
    wall = time.perf_counter() - started
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000
    print(f"{p(0.50):.2f} {p(0.99):.2f} {rounds / wall:.0f}")


main()
