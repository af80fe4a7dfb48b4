//! The event-trace hash: every event the simulation processes (deliveries, drops, ticks, client writes,
//! commits, faults) is fed, in order, to one XXH3 hasher. XXH3 is specified and stable across platforms and
//! versions (unlike `std`'s `DefaultHasher`), so a seed's hash is the same on every run and every machine
//! with the same code.

use cave::crdt::Entry;
use cave::replication::{Message, PeerRecord};
use xxhash_rust::xxh3::Xxh3;

/// Event tags.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub enum Tag {
    Start = 1,
    Tick,
    Deliver,
    Drop,
    Client,
    Commit,
    Purge,
    Crash,
    Leave,
    Stop,
    Heal,
    Forget,
}

/// The running hash.
pub struct Trace {
    hasher: Xxh3,
    /// Events hashed so far.
    pub events: u64,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace {
            hasher: Xxh3::new(),
            events: 0,
        }
    }
}

impl Trace {
    /// The hash of everything so far.
    pub fn digest(&self) -> u64 {
        self.hasher.digest()
    }

    /// Start an event: its tag, time and node.
    pub fn event(&mut self, tag: Tag, now_ms: u64, node: usize) {
        self.events += 1;
        self.hasher.update(&[tag as u8]);
        self.u64(now_ms);
        self.u64(node as u64);
    }

    pub fn u64(&mut self, x: u64) {
        self.hasher.update(&x.to_le_bytes());
    }

    fn u128(&mut self, x: u128) {
        self.hasher.update(&x.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.hasher.update(b);
    }

    pub fn entry(&mut self, e: &Entry) {
        self.bytes(e.key.as_bytes());
        match e.doc_meta() {
            None => self.bytes(&e.value),
            // A document by its history: Automerge may lay the same changes out differently.
            Some(d) => {
                self.u64(d.changes);
                self.u64(d.heads);
                self.u64(d.delta as u64);
            }
        }
        self.bytes(e.content_type.as_bytes());
        self.hasher.update(&[e.secret as u8, e.deleted as u8]);
        self.u64(e.version.hlc);
        self.u64(e.version.node.0);
    }

    fn entries(&mut self, entries: &[Entry]) {
        self.u64(entries.len() as u64);
        for e in entries {
            self.entry(e);
        }
    }

    fn record(&mut self, r: &PeerRecord) {
        self.u64(r.id.0);
        self.bytes(r.grpc_addr.as_bytes());
        self.bytes(r.http_addr.as_bytes());
        self.u64(r.incarnation);
        self.u64(r.heartbeat);
        self.hasher.update(&[r.left as u8]);
    }

    /// A message, field by field.
    pub fn message(&mut self, msg: &Message) {
        self.bytes(msg.kind().as_bytes());
        match msg {
            Message::Delta { entries } => self.entries(entries),
            Message::Gossip { records, reply, now_ms } => {
                self.u64(records.len() as u64);
                for r in records {
                    self.record(r);
                }
                self.hasher.update(&[*reply as u8]);
                self.u64(*now_ms);
            }
            Message::AeRoot {
                session,
                root,
                authority,
            } => {
                self.u64(*session);
                self.u128(*root);
                self.u64(*authority as u64);
            }
            Message::AeRootReply {
                session,
                groups,
                authority,
            } => {
                self.u64(*session);
                self.u64(*authority as u64);
                match groups {
                    None => self.u64(u64::MAX),
                    Some(g) => {
                        self.u64(g.len() as u64);
                        for d in g {
                            self.u128(*d);
                        }
                    }
                }
            }
            Message::AeGroups { session, groups } => {
                self.u64(*session);
                self.bytes(groups);
            }
            Message::AeBuckets {
                session,
                groups,
                buckets,
            } => {
                self.u64(*session);
                self.bytes(groups);
                self.u64(buckets.len() as u64);
                for (b, d) in buckets {
                    self.u64(*b as u64);
                    self.u128(*d);
                }
            }
            Message::AeVersions {
                session,
                buckets,
                versions,
                authority,
            } => {
                self.u64(*session);
                self.u64(*authority as u64);
                self.u64(buckets.len() as u64);
                for b in buckets {
                    self.u64(*b as u64);
                }
                self.u64(versions.len() as u64);
                for (k, v, tag) in versions {
                    self.bytes(k.as_bytes());
                    self.u64(v.hlc);
                    self.u64(v.node.0);
                    self.u64(*tag);
                }
            }
            Message::AeEntries {
                session,
                entries,
                want,
                last,
            } => {
                self.u64(*session);
                self.entries(entries);
                self.u64(want.len() as u64);
                for k in want {
                    self.bytes(k.as_bytes());
                }
                self.hasher.update(&[*last as u8]);
            }
            Message::AePush { session, entries } => {
                self.u64(*session);
                self.entries(entries);
            }
            Message::LockPrepare { lock, ballot } => {
                self.bytes(lock.as_bytes());
                self.ballot(ballot);
            }
            Message::LockPromise {
                lock,
                ballot,
                ok,
                promised,
                accepted,
                voters,
            } => {
                self.u64(*voters as u64);
                self.bytes(lock.as_bytes());
                self.ballot(ballot);
                self.hasher.update(&[*ok as u8]);
                self.ballot(promised);
                self.entries(accepted.as_slice());
            }
            Message::LockAccept { ballot, entry } => {
                self.ballot(ballot);
                self.entries(std::slice::from_ref(entry));
            }
            Message::LockAccepted {
                lock,
                ballot,
                ok,
                promised,
            } => {
                self.bytes(lock.as_bytes());
                self.ballot(ballot);
                self.hasher.update(&[*ok as u8]);
                self.ballot(promised);
            }
        }
    }

    fn ballot(&mut self, b: &cave::crdt::lock::Ballot) {
        self.u64(b.round);
        self.u64(b.node.0);
    }
}
