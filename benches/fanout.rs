//! Fan-out of one write: the messages and bytes a writer sends per write, in clusters of 3 to 20 nodes.
//!
//! The clusters run in this process on the replication core itself (`cave::replication::Core`, the same
//! sans-IO state machine the nodes and the simulation run), wired by an in-memory bus with simulated time:
//! no sockets, so the figures count protocol traffic only and are exact (not timed, not sampled). Bytes are
//! the sealed frames the gRPC adapter would send (`cave::grpc::Codec::seal`: protobuf envelope plus the
//! XSalsa20-Poly1305 seal), without the per-RPC HTTP/2 and gRPC framing (~30-60 bytes more per message).
//!
//! For each size the cluster first runs 60 simulated seconds so that every member knows every other one,
//! then node 1 commits WRITES single-key writes (KEY_BYTES-byte keys, VALUE_BYTES-byte values), each its own
//! commit, delivering everything to the peers as it goes; the writer's sends are counted. For context the
//! background traffic (gossip and anti-entropy rounds) of the writer over the idle minute before is
//! printed as well.
//!
//! Run: `cargo bench --bench fanout` (env NODES="3,5,10,20", WRITES, VALUE_BYTES).

use std::collections::{BTreeMap, HashMap, VecDeque};

use cave::crdt::hlc::from_physical_ms;
use cave::crdt::{Entry, LwwMap, NodeId, Version};
use cave::grpc::Codec;
use cave::replication::{Core, CoreConfig, Destination, Effects, Message, PeerRecord, TICK_INTERVAL_MS};
use cave::secrets::{MasterKey, TRANSPORT_DOMAIN};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Messages and sealed bytes sent, by message kind.
#[derive(Default)]
struct Sent {
    by_kind: BTreeMap<&'static str, (u64, u64)>,
}

impl Sent {
    fn add(&mut self, kind: &'static str, bytes: usize) {
        let slot = self.by_kind.entry(kind).or_default();
        slot.0 += 1;
        slot.1 += bytes as u64;
    }

    fn total(&self) -> (u64, u64) {
        self.by_kind.values().fold((0, 0), |(m, b), (dm, db)| (m + dm, b + db))
    }
}

struct Cluster {
    cores: Vec<Core>,
    maps: Vec<LwwMap>,
    codecs: Vec<Codec>,
    by_addr: HashMap<String, usize>,
    queue: VecDeque<(usize, usize, Message)>,
    now_ms: u64,
    /// What node 0 (the writer) sent.
    sent: Sent,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let key = MasterKey::generate();
        let now_ms = 1_764_633_600_000;
        let addr = |i: usize| format!("node{i}:7000");
        let cores = (0..n)
            .map(|i| {
                let me = PeerRecord {
                    id: NodeId(i as u64 + 1),
                    grpc_addr: addr(i),
                    http_addr: format!("node{i}:8000"),
                    incarnation: now_ms,
                    heartbeat: 0,
                    left: false,
                    version: String::new(),
                    keys: 0,
                };
                // Everyone is seeded with the first node, as a cluster is usually started.
                let seeds = if i == 0 { vec![] } else { vec![addr(0)] };
                Core::new(CoreConfig::default(), me, seeds, i as u64 + 7, now_ms)
            })
            .collect();
        let codecs = (0..n)
            .map(|i| Codec::new(key.sealer(TRANSPORT_DOMAIN), "bench".into(), NodeId(i as u64 + 1)))
            .collect();
        Cluster {
            cores,
            maps: (0..n).map(|_| LwwMap::new()).collect(),
            codecs,
            by_addr: (0..n).map(|i| (addr(i), i)).collect(),
            queue: VecDeque::new(),
            now_ms,
            sent: Sent::default(),
        }
    }

    /// Apply one node's effects: merge what it persists, queue what it sends (counting the writer's).
    fn apply(&mut self, i: usize, fx: Effects) {
        for entry in fx.persist {
            self.maps[i].merge(entry);
        }
        for (to, msg) in fx.sends {
            let to = match to {
                Destination::Node(id) => id.0 as usize - 1,
                Destination::Addr(addr) => self.by_addr[&addr],
            };
            if i == 0 {
                self.sent.add(msg.kind(), self.codecs[0].seal(&msg).len());
            }
            self.queue.push_back((i, to, msg));
        }
    }

    /// Deliver every queued message (and what the answers cause) at the current time.
    fn deliver(&mut self) {
        while let Some((from, to, msg)) = self.queue.pop_front() {
            let fx = self.cores[to].on_message(self.now_ms, NodeId(from as u64 + 1), msg, &self.maps[to]);
            self.apply(to, fx);
        }
    }

    /// Run `ms` of simulated time in ticks, delivering as it goes.
    fn run(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += TICK_INTERVAL_MS;
            for i in 0..self.cores.len() {
                let fx = self.cores[i].on_tick(self.now_ms, &self.maps[i]);
                self.apply(i, fx);
            }
            self.deliver();
        }
    }

    /// Node 0 commits one write and broadcasts it.
    fn write(&mut self, seq: u64, key_bytes: usize, value_bytes: usize) {
        let key = format!("bench/{seq:0width$}", width = key_bytes.saturating_sub(6));
        let version = Version::new(from_physical_ms(self.now_ms) + seq, NodeId(1));
        let entry = Entry::value(key, vec![b'v'; value_bytes], version);
        self.maps[0].merge(entry.clone());
        let fx = self.cores[0].on_local_commit(self.now_ms, &[entry]);
        self.apply(0, fx);
        self.deliver();
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("NODES")
        .unwrap_or_else(|_| "3,5,10,20".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let writes: u64 = env_or("WRITES", 1_000);
    let key_bytes: usize = env_or("KEY_BYTES", 16);
    let value_bytes: usize = env_or("VALUE_BYTES", 100);
    println!(
        "fan-out per write: {writes} single-key writes on node 1, {key_bytes}-byte keys, {value_bytes}-byte values"
    );
    println!(
        "{:>5} {:>7} {:>13} {:>14} {:>13} {:>22}",
        "nodes", "alive", "msgs/write", "bytes/write", "bytes/peer", "idle writer msgs/s, B/s"
    );
    for n in sizes {
        let mut cluster = Cluster::new(n);
        cluster.run(60_000);
        let alive = cluster.cores[0].membership().alive().count();
        let (idle_msgs, idle_bytes) = cluster.sent.total();
        cluster.sent = Sent::default();
        for seq in 0..writes {
            cluster.write(seq, key_bytes, value_bytes);
        }
        let deltas = cluster.sent.by_kind.get("delta").copied().unwrap_or_default();
        let converged = cluster.maps.iter().all(|m| m.live() as u64 == writes);
        assert!(converged, "every node holds every write");
        let per_write = deltas.0 as f64 / writes as f64;
        let bytes = deltas.1 as f64 / writes as f64;
        println!(
            "{n:>5} {alive:>7} {per_write:>13.2} {bytes:>14.1} {:>13.1} {:>12.1}, {:>8.0}",
            bytes / per_write.max(1.0),
            idle_msgs as f64 / 60.0,
            idle_bytes as f64 / 60.0,
        );
    }
}
