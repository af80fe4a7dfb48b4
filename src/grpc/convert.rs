//! The one place where protobuf types meet domain types. Decoding validates everything a peer sends
//! (keys, content types, versions, digest lengths): a malformed message is an error, never a panic and never
//! a half-applied message.

use bytes::Bytes;

use super::pb;
use crate::crdt::digest::GROUPS;
use crate::crdt::lock::{lock_key, Ballot, Grant};
use crate::crdt::{expiry, DocMeta, Entry, LeaseId, NodeId, Version};
use crate::error::{Error, Result};
use crate::replication::{Message, PeerRecord};

fn split(d: u128) -> (u64, u64) {
    ((d >> 64) as u64, d as u64)
}

fn join(hi: u64, lo: u64) -> u128 {
    ((hi as u128) << 64) | lo as u128
}

fn digests_out(ds: impl IntoIterator<Item = u128>) -> Vec<u64> {
    ds.into_iter()
        .flat_map(|d| {
            let (hi, lo) = split(d);
            [hi, lo]
        })
        .collect()
}

fn digests_in(words: &[u64]) -> Result<Vec<u128>> {
    if !words.len().is_multiple_of(2) {
        return Err(corrupt("digest list has an odd number of words"));
    }
    Ok(words.chunks_exact(2).map(|w| join(w[0], w[1])).collect())
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("malformed replication message: {what}"))
}

/// Keys from peers obey the same syntax as keys from clients (reserved `_system/` keys included: those are
/// Cave's own and do replicate).
fn check_key(key: &str) -> Result<()> {
    crate::key::validate_prefix(key).map_err(|e| corrupt(&e.to_string()))?;
    if key.is_empty() {
        return Err(corrupt("empty key"));
    }
    Ok(())
}

/// A domain entry as protobuf.
pub fn entry_out(e: &Entry) -> pb::Entry {
    pb::Entry {
        key: e.key.to_string(),
        value: e.value.to_vec(),
        content_type: e.content_type.to_string(),
        secret: e.secret,
        deleted: e.deleted,
        hlc: e.version.hlc,
        node: e.version.node.0,
        doc: e.doc_meta().map(|d| pb::DocMeta {
            created_hlc: d.created.hlc,
            created_node: d.created.node.0,
            changes: d.changes,
            heads: d.heads,
            delta: d.delta,
        }),
        expires: e.expires.map(std::num::NonZeroU64::get),
        lease: e.lease.map(|id| id.get()),
    }
}

/// A protobuf entry, validated.
pub fn entry_in(e: pb::Entry) -> Result<Entry> {
    check_key(&e.key)?;
    if e.hlc == 0 || e.node == 0 {
        return Err(corrupt("entry without a version"));
    }
    if e.content_type.len() > 255 || !e.content_type.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(corrupt("bad content type"));
    }
    if e.deleted && !e.value.is_empty() {
        return Err(corrupt("tombstone with a value"));
    }
    let doc = match e.doc {
        None => None,
        Some(_) if e.deleted => return Err(corrupt("tombstone with a document")),
        Some(_) if e.expires.is_some() => return Err(corrupt("document with an expiry")),
        Some(_) if e.lease.is_some() => return Err(corrupt("document bound to a lease")),
        Some(d) => {
            let created = Version::new(d.created_hlc, NodeId(d.created_node));
            // A document is created by a write no later than its latest edit.
            if d.created_hlc == 0 || d.created_node == 0 || created > Version::new(e.hlc, NodeId(e.node)) {
                return Err(corrupt("document with a bad creation version"));
            }
            Some(DocMeta {
                created,
                changes: d.changes,
                heads: d.heads,
                delta: d.delta,
            })
        }
    };
    Ok(Entry {
        key: e.key.into(),
        value: Bytes::from(e.value),
        content_type: e.content_type.into(),
        secret: e.secret,
        deleted: e.deleted,
        version: Version::new(e.hlc, NodeId(e.node)),
        doc: doc.map(Box::new),
        expires: e.expires.map(expiry::at),
        lease: match e.lease {
            None => None,
            Some(id) => Some(LeaseId::new(id).ok_or_else(|| corrupt("lease id 0"))?),
        },
    })
}

fn entries_in(es: Vec<pb::Entry>) -> Result<Vec<Entry>> {
    es.into_iter().map(entry_in).collect()
}

fn record_out(r: &PeerRecord) -> pb::PeerRecord {
    pb::PeerRecord {
        id: r.id.0,
        grpc_addr: r.grpc_addr.clone(),
        http_addr: r.http_addr.clone(),
        incarnation: r.incarnation,
        heartbeat: r.heartbeat,
        left: r.left,
        version: r.version.clone(),
        keys: r.keys,
    }
}

fn record_in(r: pb::PeerRecord) -> Result<PeerRecord> {
    if r.id == 0 {
        return Err(corrupt("peer record without an id"));
    }
    for addr in [&r.grpc_addr, &r.http_addr] {
        if addr.len() > 256 || addr.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(corrupt("bad peer address"));
        }
    }
    if r.version.len() > 64 || r.version.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(corrupt("bad peer version"));
    }
    Ok(PeerRecord {
        id: NodeId(r.id),
        grpc_addr: r.grpc_addr,
        http_addr: r.http_addr,
        incarnation: r.incarnation,
        heartbeat: r.heartbeat,
        left: r.left,
        version: r.version,
        keys: r.keys,
    })
}

/// Authority levels are 0..=3 (see `Core::authority`).
fn authority_in(a: u32) -> Result<u8> {
    u8::try_from(a)
        .ok()
        .filter(|a| *a <= 3)
        .ok_or_else(|| corrupt("authority out of range"))
}

fn buckets_in(ids: Vec<u32>) -> Result<Vec<u16>> {
    ids.into_iter()
        .map(|b| u16::try_from(b).map_err(|_| corrupt("bucket out of range")))
        .collect()
}

/// A message as the body of an envelope.
pub fn message_out(msg: &Message) -> pb::envelope::Body {
    use pb::envelope::Body;
    match msg {
        Message::Delta { entries } => Body::Delta(pb::Delta {
            entries: entries.iter().map(entry_out).collect(),
        }),
        Message::Gossip { records, reply, now_ms } => Body::Gossip(pb::Gossip {
            records: records.iter().map(record_out).collect(),
            reply: *reply,
            now_ms: *now_ms,
        }),
        Message::AeRoot {
            session,
            root,
            authority,
        } => {
            let (root_hi, root_lo) = split(*root);
            Body::AeRoot(pb::AeRoot {
                session: *session,
                root_hi,
                root_lo,
                authority: *authority as u32,
            })
        }
        Message::AeRootReply {
            session,
            groups,
            authority,
        } => Body::AeRootReply(pb::AeRootReply {
            session: *session,
            authority: *authority as u32,
            equal: groups.is_none(),
            groups: groups
                .as_ref()
                .map(|g| digests_out(g.iter().copied()))
                .unwrap_or_default(),
        }),
        Message::AeGroups { session, groups } => Body::AeGroups(pb::AeGroups {
            session: *session,
            groups: groups.clone(),
        }),
        Message::AeBuckets {
            session,
            groups,
            buckets,
        } => Body::AeBuckets(pb::AeBuckets {
            session: *session,
            groups: groups.clone(),
            buckets: buckets.iter().map(|(b, _)| *b as u32).collect(),
            digests: buckets.iter().map(|(_, d)| *d as u64).collect(),
        }),
        Message::AeVersions {
            session,
            buckets,
            versions,
            authority,
        } => Body::AeVersions(pb::AeVersions {
            session: *session,
            authority: *authority as u32,
            buckets: buckets.iter().map(|b| *b as u32).collect(),
            versions: versions
                .iter()
                .map(|(key, v, tag)| pb::KeyVersion {
                    key: key.clone(),
                    hlc: v.hlc,
                    node: v.node.0,
                    tag: *tag,
                })
                .collect(),
        }),
        Message::AeEntries {
            session,
            entries,
            want,
            last,
        } => Body::AeEntries(pb::AeEntries {
            session: *session,
            entries: entries.iter().map(entry_out).collect(),
            want: want.clone(),
            last: *last,
        }),
        Message::AePush { session, entries } => Body::AePush(pb::AePush {
            session: *session,
            entries: entries.iter().map(entry_out).collect(),
        }),
        Message::LockPrepare { lock, ballot } => Body::LockPrepare(pb::LockPrepare {
            lock: lock.clone(),
            ballot: Some(ballot_out(ballot)),
        }),
        Message::LockPromise {
            lock,
            ballot,
            ok,
            promised,
            accepted,
            voters,
        } => Body::LockPromise(pb::LockPromise {
            voters: *voters,
            lock: lock.clone(),
            ballot: Some(ballot_out(ballot)),
            ok: *ok,
            promised: Some(ballot_out(promised)),
            accepted: accepted.as_ref().map(entry_out),
        }),
        Message::LockAccept { ballot, entry } => Body::LockAccept(pb::LockAccept {
            ballot: Some(ballot_out(ballot)),
            entry: Some(entry_out(entry)),
        }),
        Message::LockAccepted {
            lock,
            ballot,
            ok,
            promised,
        } => Body::LockAccepted(pb::LockAccepted {
            lock: lock.clone(),
            ballot: Some(ballot_out(ballot)),
            ok: *ok,
            promised: Some(ballot_out(promised)),
        }),
    }
}

fn ballot_out(b: &Ballot) -> pb::Ballot {
    pb::Ballot {
        round: b.round,
        node: b.node.0,
    }
}

/// A proposal's ballot: present, from a real node, past round 0. `promised` ballots may be zero (nothing
/// promised yet).
fn ballot_in(b: Option<pb::Ballot>, may_be_zero: bool) -> Result<Ballot> {
    let b = b.ok_or_else(|| corrupt("lock message without a ballot"))?;
    let ballot = Ballot {
        round: b.round,
        node: NodeId(b.node),
    };
    if !may_be_zero && (b.round == 0 || b.node == 0) {
        return Err(corrupt("lock ballot of round or node 0"));
    }
    Ok(ballot)
}

/// A lock's name must make a valid key under the lock folder.
fn lock_in(lock: String) -> Result<String> {
    check_key(&lock_key(&lock))?;
    Ok(lock)
}

/// A lock record: an entry of that lock's key holding a grant.
fn lock_record_in(lock: &str, e: pb::Entry) -> Result<(Entry, Grant)> {
    let entry = entry_in(e)?;
    let grant = (entry.key == lock_key(lock))
        .then(|| Grant::of_entry(&entry))
        .flatten()
        .ok_or_else(|| corrupt("lock record that is not one"))?;
    Ok((entry, grant))
}

/// The body of an envelope as a message, validated.
pub fn message_in(body: pb::envelope::Body) -> Result<Message> {
    use pb::envelope::Body;
    Ok(match body {
        Body::Delta(d) => Message::Delta {
            entries: entries_in(d.entries)?,
        },
        Body::Gossip(g) => Message::Gossip {
            records: g.records.into_iter().map(record_in).collect::<Result<_>>()?,
            reply: g.reply,
            now_ms: g.now_ms,
        },
        Body::AeRoot(r) => Message::AeRoot {
            session: r.session,
            root: join(r.root_hi, r.root_lo),
            authority: authority_in(r.authority)?,
        },
        Body::AeRootReply(r) => {
            let groups = if r.equal {
                None
            } else {
                let groups = digests_in(&r.groups)?;
                if groups.len() != GROUPS {
                    return Err(corrupt("wrong number of group digests"));
                }
                Some(groups)
            };
            Message::AeRootReply {
                session: r.session,
                groups,
                authority: authority_in(r.authority)?,
            }
        }
        Body::AeGroups(g) => Message::AeGroups {
            session: g.session,
            groups: g.groups,
        },
        Body::AeBuckets(b) => {
            let digests: Vec<u128> = b.digests.iter().map(|&d| d as u128).collect();
            if digests.len() != b.buckets.len() {
                return Err(corrupt("bucket ids and digests differ in number"));
            }
            Message::AeBuckets {
                session: b.session,
                groups: b.groups,
                buckets: buckets_in(b.buckets)?.into_iter().zip(digests).collect(),
            }
        }
        Body::AeVersions(v) => Message::AeVersions {
            session: v.session,
            authority: authority_in(v.authority)?,
            buckets: buckets_in(v.buckets)?,
            versions: v
                .versions
                .into_iter()
                .map(|kv| {
                    check_key(&kv.key)?;
                    Ok((kv.key, Version::new(kv.hlc, NodeId(kv.node)), kv.tag))
                })
                .collect::<Result<_>>()?,
        },
        Body::AeEntries(e) => {
            for k in &e.want {
                check_key(k)?;
            }
            Message::AeEntries {
                session: e.session,
                entries: entries_in(e.entries)?,
                want: e.want,
                last: e.last,
            }
        }
        Body::AePush(p) => Message::AePush {
            session: p.session,
            entries: entries_in(p.entries)?,
        },
        Body::LockPrepare(p) => Message::LockPrepare {
            lock: lock_in(p.lock)?,
            ballot: ballot_in(p.ballot, false)?,
        },
        Body::LockPromise(p) => {
            let lock = lock_in(p.lock)?;
            let accepted = match p.accepted {
                None => None,
                Some(e) => Some(lock_record_in(&lock, e)?.0),
            };
            Message::LockPromise {
                ballot: ballot_in(p.ballot, false)?,
                ok: p.ok,
                promised: ballot_in(p.promised, true)?,
                accepted,
                voters: p.voters,
                lock,
            }
        }
        Body::LockAccept(p) => {
            let ballot = ballot_in(p.ballot, false)?;
            let e = p.entry.ok_or_else(|| corrupt("lock accept without a record"))?;
            let name = crate::crdt::lock::name_of_key(&e.key)
                .ok_or_else(|| corrupt("lock accept of a key outside the lock folder"))?
                .to_string();
            let (entry, grant) = lock_record_in(&name, e)?;
            if grant.ballot != ballot {
                return Err(corrupt("lock record of another ballot"));
            }
            Message::LockAccept { ballot, entry }
        }
        Body::LockAccepted(p) => Message::LockAccepted {
            lock: lock_in(p.lock)?,
            ballot: ballot_in(p.ballot, false)?,
            ok: p.ok,
            promised: ballot_in(p.promised, true)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            "[a-z]{1,8}(/[a-z]{1,8}){0,2}",
            prop::collection::vec(any::<u8>(), 0..32),
            1u64..,
            1u64..,
            any::<bool>(),
            any::<bool>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        )
            .prop_map(|(key, value, hlc, node, deleted, secret, expires, lease)| {
                let v = Version::new(hlc, NodeId(node));
                let lease = lease.and_then(LeaseId::new);
                let expires = expires.and_then(std::num::NonZeroU64::new);
                if deleted {
                    Entry {
                        expires,
                        lease,
                        ..Entry::tombstone(key, v)
                    }
                } else {
                    Entry {
                        secret,
                        expires,
                        lease,
                        ..Entry::value(key, value, v)
                    }
                }
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            prop::collection::vec(arb_entry(), 0..5).prop_map(|entries| Message::Delta { entries }),
            (any::<u64>(), any::<u128>(), 0u8..=3).prop_map(|(session, root, authority)| Message::AeRoot {
                session,
                root,
                authority
            }),
            (
                any::<u64>(),
                prop::option::of(prop::collection::vec(any::<u128>(), GROUPS..=GROUPS))
            )
                .prop_map(|(session, groups)| Message::AeRootReply {
                    session,
                    groups,
                    authority: 3
                }),
            (
                any::<u64>(),
                prop::collection::vec((any::<u16>(), any::<u64>().prop_map(u128::from)), 0..10),
                prop::collection::vec(any::<u8>(), 0..4)
            )
                .prop_map(|(session, buckets, groups)| Message::AeBuckets {
                    session,
                    groups,
                    buckets
                }),
            (any::<u64>(), prop::collection::vec(arb_entry(), 0..4), any::<bool>()).prop_map(
                |(session, entries, last)| {
                    let want = entries.iter().map(|e| e.key.to_string()).collect();
                    Message::AeEntries {
                        session,
                        entries,
                        want,
                        last,
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(msg in arb_message()) {
            prop_assert_eq!(message_in(message_out(&msg)).unwrap(), msg);
        }
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let bad_authority = pb::AeRoot {
            session: 1,
            root_hi: 0,
            root_lo: 0,
            authority: 9,
        };
        assert!(message_in(pb::envelope::Body::AeRoot(bad_authority)).is_err());
        use pb::envelope::Body;
        let bad_key = pb::Entry {
            key: "a//b".into(),
            hlc: 1,
            node: 1,
            ..Default::default()
        };
        assert!(message_in(Body::Delta(pb::Delta { entries: vec![bad_key] })).is_err());
        let no_version = pb::Entry {
            key: "a".into(),
            ..Default::default()
        };
        assert!(message_in(Body::Delta(pb::Delta {
            entries: vec![no_version]
        }))
        .is_err());
        let short = pb::AeRootReply {
            authority: 0,
            session: 1,
            equal: false,
            groups: vec![1, 2, 3],
        };
        assert!(message_in(Body::AeRootReply(short)).is_err());
        let mismatched = pb::AeBuckets {
            session: 1,
            groups: vec![],
            buckets: vec![1],
            digests: vec![],
        };
        assert!(message_in(Body::AeBuckets(mismatched)).is_err());
        let big_bucket = pb::AeVersions {
            authority: 0,
            session: 1,
            buckets: vec![70_000],
            versions: vec![],
        };
        assert!(message_in(Body::AeVersions(big_bucket)).is_err());
    }
}
