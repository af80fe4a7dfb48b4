//! Edits of a [`Doc`]: replacing its JSON as a difference, RFC 7396 merge patches, and RFC 6902 JSON Patch
//! operations plus `increment`.
//!
//! The patch *texts* are parsed by serde (`serde_json` for the JSON, a serde enum for the JSON Patch ops);
//! what is translated here is their meaning onto Automerge operations, which no JSON Patch crate does (they
//! patch a `serde_json::Value`, and patching a materialised copy and writing it back would turn every edit into
//! a rewrite of the whole document, which is exactly what loses concurrent edits). Every edit that can fail is
//! applied inside one pending Automerge transaction that the caller commits only on success, or rolls back.
//!
//! Counters: a field created as a counter (`add` with `"counter": true`, or the first `increment`) holds a
//! counter (see [`super::counter`]), whose concurrent increments add up, the first ones too. Writing a plain
//! number over a counter (a PUT or a merge patch) increments it by the difference, so that increments made
//! concurrently elsewhere still count.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{counter, json_of, member_json, Doc};
use crate::error::{Error, Result};

/// One JSON Patch operation (RFC 6902 `add`, `remove`, `replace`, `test`), or Cave's `increment`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    /// Add (or, on an object member, replace) a value; `counter` makes an integer a counter.
    Add {
        /// A JSON Pointer (RFC 6901).
        path: String,
        /// The value.
        value: Json,
        /// Create the field as a counter.
        #[serde(default)]
        counter: bool,
    },
    /// Remove the value at `path`.
    Remove {
        /// A JSON Pointer.
        path: String,
    },
    /// Replace the value at `path`, which must exist.
    Replace {
        /// A JSON Pointer.
        path: String,
        /// The new value.
        value: Json,
    },
    /// Fail the patch unless the value at `path` equals `value`.
    Test {
        /// A JSON Pointer.
        path: String,
        /// The expected value.
        value: Json,
    },
    /// Add `value` to the counter at `path` (creating a counter there if the field is missing).
    Increment {
        /// A JSON Pointer.
        path: String,
        /// The amount (may be negative).
        value: i64,
    },
}

fn unprocessable(msg: impl std::fmt::Display) -> Error {
    Error::Unprocessable(msg.to_string())
}

/// The reference tokens of a JSON Pointer (RFC 6901: `~1` is `/`, `~0` is `~`). `""` is the root.
fn tokens(path: &str) -> Result<Vec<String>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Error::invalid(format!("a JSON Pointer starts with '/': {path:?}")));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// Where a pointer's last token sits: its parent object and the property in it.
struct Place {
    parent: ObjId,
    kind: ObjType,
    token: String,
}

impl Doc {
    /// Make the document equal `target` (a JSON object) by the smallest edits: keys missing from it are
    /// removed, nested objects are edited in place, counters are incremented by the difference, unchanged
    /// values are left alone. Not committed.
    pub fn update_to(&mut self, target: &Json) -> Result<()> {
        let Json::Object(map) = target else {
            return Err(Error::invalid("a document is a JSON object"));
        };
        update_map(&mut self.inner, &ROOT, map)
    }

    /// Apply an RFC 7396 merge patch (an object). Not committed.
    pub fn merge_patch(&mut self, patch: &Json) -> Result<()> {
        let Json::Object(map) = patch else {
            return Err(unprocessable("a merge patch of a document is a JSON object"));
        };
        merge_map(&mut self.inner, &ROOT, map)
    }

    /// Apply JSON Patch operations in order; the first that does not apply fails the whole patch (the caller
    /// then rolls back). Not committed.
    pub fn json_patch(&mut self, ops: &[PatchOp]) -> Result<()> {
        for (index, op) in ops.iter().enumerate() {
            self.apply_op(op).map_err(|e| e.in_op(index))?;
        }
        Ok(())
    }

    /// Drop the edits not committed yet.
    pub fn rollback(&mut self) {
        self.inner.rollback();
    }

    fn resolve(&self, path: &str) -> Result<Option<Place>> {
        let mut tokens = tokens(path)?;
        let Some(token) = tokens.pop() else { return Ok(None) };
        let mut obj = ROOT;
        for t in &tokens {
            let kind = self.inner.object_type(&obj).map_err(unprocessable)?;
            let prop = prop_of(kind, t, self.inner.length(&obj), false)?;
            match self.inner.get(&obj, prop).map_err(unprocessable)? {
                Some((Value::Object(_), id)) if counter::is_counter(&self.inner, &id) => {
                    return Err(unprocessable(format!("{path}: {t:?} is a counter, not an object")))
                }
                Some((Value::Object(_), id)) => obj = id,
                Some(_) => return Err(unprocessable(format!("{path}: {t:?} is not an object or array"))),
                None => return Err(unprocessable(format!("{path}: {t:?} does not exist"))),
            }
        }
        let kind = self.inner.object_type(&obj).map_err(unprocessable)?;
        Ok(Some(Place {
            parent: obj,
            kind,
            token,
        }))
    }

    fn apply_op(&mut self, op: &PatchOp) -> Result<()> {
        match op {
            PatchOp::Add { path, value, counter } => {
                let start = match (*counter, value.as_i64()) {
                    (false, _) => None,
                    (true, Some(n)) => Some(n),
                    (true, None) => return Err(unprocessable(format!("{path}: a counter starts at an integer"))),
                };
                let Some(place) = self.resolve(path)? else {
                    return match start {
                        Some(_) => Err(unprocessable("a document is a JSON object")),
                        None => self.replace_root(value),
                    };
                };
                let doc = &mut self.inner;
                let len = doc.length(&place.parent);
                let prop = prop_of(place.kind, &place.token, len, true)?;
                let insert = place.kind == ObjType::List;
                match start {
                    Some(n) => {
                        check_prop(&prop)?;
                        counter::create(doc, &place.parent, prop, insert, n)
                    }
                    None => write(doc, &place.parent, prop, value, insert),
                }
            }
            PatchOp::Remove { path } => {
                let place = self.existing(path)?;
                let prop = prop_of(place.kind, &place.token, self.inner.length(&place.parent), false)?;
                self.inner.delete(&place.parent, prop).map_err(unprocessable)
            }
            PatchOp::Replace { path, value } => {
                let Some(place) = self.resolve(path)? else {
                    return self.replace_root(value);
                };
                self.existing(path)?;
                let prop = prop_of(place.kind, &place.token, self.inner.length(&place.parent), false)?;
                write(&mut self.inner, &place.parent, prop, value, false)
            }
            PatchOp::Test { path, value } => {
                let found = match self.resolve(path)? {
                    None => Some(json_of(&self.inner, &ROOT)),
                    Some(place) => {
                        let prop = prop_of(place.kind, &place.token, self.inner.length(&place.parent), false)?;
                        member_json(&self.inner, &place.parent, prop)
                    }
                };
                if found.as_ref() == Some(value) {
                    Ok(())
                } else {
                    Err(unprocessable(format!("{path}: test failed")))
                }
            }
            PatchOp::Increment { path, value } => {
                let Some(place) = self.resolve(path)? else {
                    return Err(unprocessable("the document itself is not a counter"));
                };
                let prop = prop_of(place.kind, &place.token, self.inner.length(&place.parent), false)?;
                let doc = &mut self.inner;
                if counter::total(doc, &place.parent, prop.clone()).is_some() {
                    return counter::bump(doc, &place.parent, prop, *value);
                }
                match doc.get(&place.parent, prop.clone()).map_err(unprocessable)? {
                    Some(_) => Err(unprocessable(format!("{path} is not a counter"))),
                    None if place.kind == ObjType::Map => {
                        check_prop(&prop)?;
                        counter::create(doc, &place.parent, prop, false, *value)
                    }
                    None => Err(unprocessable(format!("{path} does not exist"))),
                }
            }
        }
    }

    fn existing(&self, path: &str) -> Result<Place> {
        let Some(place) = self.resolve(path)? else {
            return Err(unprocessable(
                "the document itself cannot be removed by a patch (DELETE the key)",
            ));
        };
        let prop = prop_of(place.kind, &place.token, self.inner.length(&place.parent), false)?;
        match self.inner.get(&place.parent, prop).map_err(unprocessable)? {
            Some(_) => Ok(place),
            None => Err(unprocessable(format!("{path} does not exist"))),
        }
    }

    fn replace_root(&mut self, value: &Json) -> Result<()> {
        match value {
            Json::Object(_) => self.update_to(value).map_err(|e| unprocessable(e.to_string())),
            _ => Err(unprocessable("a document is a JSON object")),
        }
    }
}

/// The Automerge property of pointer token `token` in an object of kind `kind` holding `len` elements if
/// it is a list; `-` (the end) and an index of `len` are allowed only when `append` (an `add`).
fn prop_of(kind: ObjType, token: &str, len: usize, append: bool) -> Result<Prop> {
    match kind {
        ObjType::List | ObjType::Text => {
            if append && token == "-" {
                return Ok(Prop::Seq(len));
            }
            let index = token
                .parse::<usize>()
                .ok()
                .filter(|_| token == "0" || !token.starts_with('0'))
                .ok_or_else(|| unprocessable(format!("{token:?} is not an array index")))?;
            if index < len || (append && index == len) {
                Ok(Prop::Seq(index))
            } else {
                Err(unprocessable(format!(
                    "array index {index} is out of bounds (length {len})"
                )))
            }
        }
        ObjType::Map | ObjType::Table => Ok(Prop::Map(token.to_string())),
    }
}

/// Refuse a reserved member name (see [`counter`]).
fn check_prop(prop: &Prop) -> Result<()> {
    match prop {
        Prop::Map(key) => counter::check_name(key),
        Prop::Seq(_) => Ok(()),
    }
}

/// Write `json` at `prop` of `obj`: inserted before it in a list when `insert`, else put over it.
fn write(doc: &mut automerge::AutoCommit, obj: &ObjId, prop: Prop, json: &Json, insert: bool) -> Result<()> {
    check_prop(&prop)?;
    let fail = |e: automerge::AutomergeError| unprocessable(e);
    match (scalar_of(json), prop) {
        (Some(s), Prop::Map(key)) => doc.put(obj, key, s).map_err(fail),
        (Some(s), Prop::Seq(i)) if insert => doc.insert(obj, i, s).map_err(fail),
        (Some(s), Prop::Seq(i)) => doc.put(obj, i, s).map_err(fail),
        (None, prop) => {
            let kind = if json.is_array() { ObjType::List } else { ObjType::Map };
            let child = match prop {
                Prop::Map(key) => doc.put_object(obj, key, kind),
                Prop::Seq(i) if insert => doc.insert_object(obj, i, kind),
                Prop::Seq(i) => doc.put_object(obj, i, kind),
            }
            .map_err(fail)?;
            fill(doc, &child, json)
        }
    }
}

/// Fill a fresh object or list with `json`'s members.
fn fill(doc: &mut automerge::AutoCommit, obj: &ObjId, json: &Json) -> Result<()> {
    match json {
        Json::Object(map) => {
            for (key, value) in map {
                write(doc, obj, Prop::Map(key.clone()), value, false)?;
            }
        }
        Json::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                write(doc, obj, Prop::Seq(i), value, true)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The scalar of a JSON value, `None` for an object or array.
fn scalar_of(json: &Json) -> Option<ScalarValue> {
    Some(match json {
        Json::Null => ScalarValue::Null,
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ScalarValue::Int(i),
            (None, Some(u)) => ScalarValue::Uint(u),
            _ => ScalarValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Array(_) | Json::Object(_) => return None,
    })
}

/// Set `key` of map `obj` to `target`, editing in place where the kinds agree.
fn set_member(doc: &mut automerge::AutoCommit, obj: &ObjId, key: &str, target: &Json, merge: bool) -> Result<()> {
    counter::check_name(key)?;
    if let Some(total) = counter::total(doc, obj, key.into()) {
        return match target.as_i64().map(|n| n.wrapping_sub(total)) {
            Some(0) => Ok(()),
            Some(by) => counter::bump(doc, obj, key.into(), by),
            None => write(doc, obj, Prop::Map(key.into()), target, false),
        };
    }
    let current = doc.get(obj, key).map_err(unprocessable)?;
    match (current, target) {
        (Some((Value::Object(ObjType::Map), id)), Json::Object(map)) => {
            if merge {
                merge_map(doc, &id, map)
            } else {
                update_map(doc, &id, map)
            }
        }
        (Some((Value::Scalar(s), _)), _) if scalar_of(target).as_ref() == Some(s.as_ref()) => Ok(()),
        (Some((Value::Object(_), id)), _) if &json_of(doc, &id) == target => Ok(()),
        (_, Json::Object(map)) if merge => {
            // RFC 7396: a patch object over a non-object merges into an empty object (dropping its nulls).
            let child = doc.put_object(obj, key, ObjType::Map).map_err(unprocessable)?;
            merge_map(doc, &child, map)
        }
        _ => write(doc, obj, Prop::Map(key.into()), target, false),
    }
}

fn update_map(doc: &mut automerge::AutoCommit, obj: &ObjId, target: &serde_json::Map<String, Json>) -> Result<()> {
    let gone: Vec<String> = doc.keys(obj).filter(|k| !target.contains_key(k)).collect();
    for key in gone {
        doc.delete(obj, key.as_str()).map_err(unprocessable)?;
    }
    for (key, value) in target {
        set_member(doc, obj, key, value, false)?;
    }
    Ok(())
}

fn merge_map(doc: &mut automerge::AutoCommit, obj: &ObjId, patch: &serde_json::Map<String, Json>) -> Result<()> {
    for (key, value) in patch {
        if value.is_null() {
            if doc.get(obj, key.as_str()).map_err(unprocessable)?.is_some() {
                doc.delete(obj, key.as_str()).map_err(unprocessable)?;
            }
        } else {
            set_member(doc, obj, key, value, true)?;
        }
    }
    Ok(())
}
