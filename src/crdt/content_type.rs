//! [`ContentType`]: an entry's content type, held once per distinct type rather than once per entry.
//!
//! A million keys typically carry two or three distinct content types. As a `String` each entry held its
//! own copy (24 bytes inline plus a heap block of 32); as a [`ContentType`] an entry holds a thin shared
//! pointer (8 bytes) to one interned copy: the text sits behind one more indirection (`Arc<String>`), read
//! only when a value is answered, so that an entry is 112 bytes, and eleven fit a B-tree node in mimalloc's
//! 1,280-byte size class rather than its 1,536-byte one. The interner is bounded ([`MAX_INTERNED`]): past
//! it, a new type gets a block of its own, exactly as before, so a writer inventing types cannot grow it
//! without limit.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use super::DEFAULT_CONTENT_TYPE;

/// Distinct content types the interner keeps (each at most 255 bytes, so at most ~300 KiB in all).
pub const MAX_INTERNED: usize = 1024;

static INTERNED: Interner = Interner::new(MAX_INTERNED);
static DEFAULT: LazyLock<ContentType> = LazyLock::new(|| ContentType::new(DEFAULT_CONTENT_TYPE));

/// The shared copies, at most `max` of them.
struct Interner {
    shared: LazyLock<Mutex<HashSet<ContentType>>>,
    max: usize,
}

impl Interner {
    const fn new(max: usize) -> Interner {
        Interner {
            shared: LazyLock::new(Mutex::default),
            max,
        }
    }

    /// The shared copy of `text`; a copy of its own once `max` texts are shared.
    fn get(&self, text: &str) -> ContentType {
        let mut shared = self.shared.lock();
        if let Some(copy) = shared.get(text) {
            return copy.clone();
        }
        let copy = ContentType(Arc::new(text.to_owned()));
        if shared.len() < self.max {
            shared.insert(copy.clone());
        }
        copy
    }
}

/// A content type (validated where it enters: the API, the wire, the store), compared and ordered as its
/// text (its `Hash` is the text's too, as `Borrow<str>` requires).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentType(Arc<String>);

impl ContentType {
    /// `text` as a content type, sharing the copy of every other entry of that type.
    pub fn new(text: &str) -> ContentType {
        INTERNED.get(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ContentType {
    /// [`DEFAULT_CONTENT_TYPE`].
    fn default() -> ContentType {
        DEFAULT.clone()
    }
}

impl Deref for ContentType {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ContentType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ContentType {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ContentType {
    fn from(text: &str) -> ContentType {
        ContentType::new(text)
    }
}

impl From<String> for ContentType {
    fn from(text: String) -> ContentType {
        ContentType::new(&text)
    }
}

impl From<&String> for ContentType {
    fn from(text: &String) -> ContentType {
        ContentType::new(text)
    }
}

impl From<ContentType> for String {
    fn from(content_type: ContentType) -> String {
        content_type.as_str().to_owned()
    }
}

impl PartialEq<str> for ContentType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ContentType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ContentType {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl fmt::Debug for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl serde::Serialize for ContentType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_type_is_held_once() {
        let a = ContentType::new("text/x-interned-once");
        let b = ContentType::from("text/x-interned-once".to_string());
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(std::mem::size_of::<ContentType>(), 8);
        assert_eq!(a, "text/x-interned-once");
        assert_eq!(ContentType::default(), DEFAULT_CONTENT_TYPE);
    }

    /// On an interner of its own: filling the process's one would stop sharing for every other test.
    #[test]
    fn the_interner_is_bounded_and_types_past_it_still_work() {
        let interner = Interner::new(4);
        let types: Vec<_> = (0..10)
            .map(|i| interner.get(&format!("application/x-bound-{i}")))
            .collect();
        assert_eq!(interner.shared.lock().len(), 4);
        for (i, t) in types.iter().enumerate() {
            assert_eq!(t.as_str(), format!("application/x-bound-{i}"));
        }
        assert!(Arc::ptr_eq(&interner.get("application/x-bound-0").0, &types[0].0));
        assert!(!Arc::ptr_eq(&interner.get("application/x-bound-9").0, &types[9].0));
    }

    #[test]
    fn order_and_equality_are_the_texts() {
        let (a, b) = (ContentType::new("a/b"), ContentType::new("a/c"));
        assert!(a < b);
        assert_eq!(a.cmp(&b), "a/b".cmp("a/c"));
        assert_ne!(a, b);
    }
}
