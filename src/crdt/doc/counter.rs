//! Counters that no concurrent writer can lose an increment of, not even the first.
//!
//! An Automerge counter adds up increments made to *one* counter. Two nodes that each create the same
//! missing field as a counter (the first `increment` of `/hits` on both sides of a partition) create two
//! counters in one register: Automerge keeps both as a conflict, shows one, and the next increment of the
//! field supersedes the other, so one side's increments were lost.
//!
//! So a Cave counter is not a scalar but a small map object, materialised as one number:
//! - it holds [`MARK`], which tells it from a user's object, and one *shard* per writer
//!   (`"\0" + actor`), an Automerge counter only that writer increments;
//! - its value is the sum of its shards, summed over every conflicting copy of the field: two concurrent
//!   creations stay two maps in one register, and nothing ever writes that register again except a user's
//!   replace or remove of the whole field (edits go *into* a map, never over it), so both keep counting;
//! - a writer increments its own shard in the visible copy (creating the shard there with the amount).
//!
//! Member names starting with NUL are reserved for this: a user's document may not contain one (422).
//! Fields written as plain Automerge counters (documents saved before counters became maps) still read as
//! numbers and increment as before.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value};

use crate::error::{Error, Result};

/// The member that marks a map object as a counter.
pub(super) const MARK: &str = "\0counter";

fn unprocessable(msg: impl std::fmt::Display) -> Error {
    Error::Unprocessable(msg.to_string())
}

/// Refuse a user's member name that Cave reserves.
pub(super) fn check_name(key: &str) -> Result<()> {
    if key.starts_with('\0') {
        return Err(unprocessable(format!(
            "member name {key:?}: names starting with NUL are reserved"
        )));
    }
    Ok(())
}

/// Whether object `id` of `doc` is a counter map.
pub(super) fn is_counter<R: ReadDoc>(doc: &R, id: &ObjId) -> bool {
    matches!(doc.object_type(id), Ok(ObjType::Map)) && matches!(doc.get(id, MARK), Ok(Some(_)))
}

/// The sum of the shards of counter map `id`.
fn shards_sum<R: ReadDoc>(doc: &R, id: &ObjId) -> i64 {
    doc.keys(id)
        .filter(|key| key.starts_with('\0') && key != MARK)
        .filter_map(|key| match doc.get(id, key.as_str()) {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Counter(c) => Some(i64::from(c)),
                _ => None,
            },
            _ => None,
        })
        .fold(0i64, i64::wrapping_add)
}

/// The value of the counter at `prop` of `obj`, or `None` if what is shown there is not a counter.
/// Conflicting copies of a counter map (concurrent creations) all count.
pub(super) fn total<R: ReadDoc>(doc: &R, obj: &ObjId, prop: Prop) -> Option<i64> {
    match doc.get(obj, prop.clone()).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Counter(c) => Some(i64::from(c)),
            _ => None,
        },
        (Value::Object(_), id) if is_counter(doc, &id) => Some(
            doc.get_all(obj, prop)
                .ok()?
                .into_iter()
                .filter(|(value, id)| matches!(value, Value::Object(ObjType::Map)) && is_counter(doc, id))
                .map(|(_, id)| shards_sum(doc, &id))
                .fold(0i64, i64::wrapping_add),
        ),
        (Value::Object(_), _) => None,
    }
}

/// This writer's shard name.
fn shard(doc: &AutoCommit) -> String {
    format!("\0{}", doc.get_actor())
}

/// Create a counter holding `start` at `prop` of `obj` (inserted there in a list when `insert`).
pub(super) fn create(doc: &mut AutoCommit, obj: &ObjId, prop: Prop, insert: bool, start: i64) -> Result<()> {
    let map = match prop {
        Prop::Map(key) => doc.put_object(obj, key, ObjType::Map),
        Prop::Seq(i) if insert => doc.insert_object(obj, i, ObjType::Map),
        Prop::Seq(i) => doc.put_object(obj, i, ObjType::Map),
    }
    .map_err(unprocessable)?;
    doc.put(&map, MARK, true).map_err(unprocessable)?;
    let name = shard(doc);
    doc.put(&map, name, ScalarValue::counter(start)).map_err(unprocessable)
}

/// Add `by` to the counter at `prop` of `obj`, which [`total`] found to be one.
pub(super) fn bump(doc: &mut AutoCommit, obj: &ObjId, prop: Prop, by: i64) -> Result<()> {
    match doc.get(obj, prop.clone()).map_err(unprocessable)? {
        Some((Value::Object(_), map)) => {
            let name = shard(doc);
            match doc.get(&map, name.as_str()).map_err(unprocessable)? {
                Some(_) => doc.increment(&map, name, by),
                None => doc.put(&map, name, ScalarValue::counter(by)),
            }
            .map_err(unprocessable)
        }
        // A plain Automerge counter, from before counters were maps.
        Some((Value::Scalar(_), _)) => doc.increment(obj, prop, by).map_err(unprocessable),
        None => Err(unprocessable("no counter there")),
    }
}
