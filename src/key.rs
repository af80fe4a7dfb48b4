//! Key syntax: paths of UTF-8 segments separated by `/`.
//!
//! A key is 1 to [`MAX_KEY_BYTES`] bytes, has no empty segment (so no leading, trailing or doubled `/`), no
//! `.` or `..` segment (they would make two spellings of one path), and no control characters (they break
//! logs, terminals and the listing format). Keys under `_system/` are reserved for Cave itself.
//!
//! Validation happens once, at the edge (HTTP, import, gRPC); everything below trusts a `&str` key.

use crate::error::{Error, Result};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The prefix reserved for Cave's own keys.
pub const SYSTEM_PREFIX: &str = "_system/";

/// Check a key a client wants to write or read.
pub fn validate(key: &str) -> Result<()> {
    validate_path(key)?;
    if key.starts_with(SYSTEM_PREFIX) || key == "_system" {
        return Err(Error::Forbidden(format!(
            "keys under {SYSTEM_PREFIX} are reserved for Cave"
        )));
    }
    Ok(())
}

/// Check a listing prefix: empty (the root) or a valid key path (without its trailing `/`).
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        Ok(())
    } else {
        validate_path(prefix)
    }
}

fn validate_path(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(format!(
            "key is {} bytes, the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "key contains the control character U+{:04X}",
            c as u32
        )));
    }
    for segment in key.split('/') {
        match segment {
            "" => {
                return Err(Error::invalid(
                    "key has an empty segment (leading, trailing or doubled '/')",
                ))
            }
            "." | ".." => return Err(Error::invalid("key has a '.' or '..' segment")),
            _ => {}
        }
    }
    Ok(())
}

/// The prefix string (`"a/b/"`) that every key below folder `a/b` starts with; `""` for the root.
pub fn folder_prefix(folder: &str) -> String {
    if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "a",
            "app/db/password",
            "ünïcode/κλειδί",
            "a.b/c..d/...",
            "x y",
            "a-b_c~d",
        ] {
            validate(ok).unwrap();
        }
        validate(&"k".repeat(MAX_KEY_BYTES)).unwrap();
    }

    #[test]
    fn rejects_bad_paths_naming_the_problem() {
        let cases = [
            ("", "empty"),
            ("a//b", "empty segment"),
            ("/a", "empty segment"),
            ("a/", "empty segment"),
            ("..", "'..'"),
            ("a/./b", "'.'"),
            ("a\u{0}b", "control"),
            ("a\nb", "control"),
            ("a\u{7f}", "control"),
        ];
        for (key, why) in cases {
            let err = validate(key).unwrap_err();
            assert!(err.to_string().contains(why), "{key:?}: {err}");
        }
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(validate(&long).unwrap_err().to_string().contains("1025 bytes"));
    }

    #[test]
    fn system_keys_are_reserved() {
        assert!(matches!(validate("_system/x"), Err(Error::Forbidden(_))));
        validate("_systemx").unwrap();
    }
}
