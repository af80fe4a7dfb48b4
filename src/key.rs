//! Key syntax: paths of UTF-8 segments separated by `/`.
//!
//! A key is 1 to [`MAX_KEY_BYTES`] bytes, has no empty segment (so no leading, trailing or doubled `/`), no
//! `.` or `..` segment (they would make two spellings of one path), and no control characters (they break
//! logs, terminals and the listing format).
//!
//! Keys under `_system/` (and `_system` itself) are reserved for Cave's own data, such as access tokens.
//! They replicate like any key (the gRPC path and anti-entropy carry them), but the client API never takes
//! or shows them: a request naming one, or a folder below `_system/`, is refused with 403, and requests over
//! the root (listings, exports, watches) pass over them as if they did not exist.
//!
//! Validation happens once, at the edge (HTTP, import, gRPC); everything below trusts a `&str` key.

use crate::error::{Error, Result};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The prefix reserved for Cave's own keys.
pub const SYSTEM_PREFIX: &str = "_system/";

/// The first string after every key under [`SYSTEM_PREFIX`] (`'0'` is the byte after `'/'`): a scan that
/// reaches the reserved range seeks here to pass over it.
pub const SYSTEM_END: &str = "_system0";

/// Whether `key` is reserved for Cave (`_system` or below `_system/`).
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(SYSTEM_PREFIX) || key == "_system"
}

/// Check a key a client wants to write or read.
pub fn validate(key: &str) -> Result<()> {
    validate_path(key)?;
    if is_reserved(key) {
        return Err(Error::Forbidden(format!(
            "keys under {SYSTEM_PREFIX} are reserved for Cave"
        )));
    }
    Ok(())
}

/// Check a folder a client names (listing, recursive delete, watch, export), without its trailing `/`:
/// empty (the root) or a valid key path outside the reserved folder.
pub fn validate_folder(folder: &str) -> Result<()> {
    if folder.is_empty() {
        Ok(())
    } else {
        validate(folder)
    }
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
        for folder in ["_system", "_system/tokens"] {
            assert!(matches!(validate_folder(folder), Err(Error::Forbidden(_))), "{folder}");
        }
        validate_folder("").unwrap();
        validate_folder("app/_system").unwrap();
        assert!(is_reserved("_system") && is_reserved("_system/a/b"));
        assert!(!is_reserved("_system.x") && !is_reserved("_systemx") && !is_reserved("app/_system/x"));
        // Every reserved key sorts before SYSTEM_END, and the keys just around the range outside it.
        for key in ["_system/", "_system/\u{10FFFF}", "_system/zzz/zzz"] {
            assert!(key < SYSTEM_END, "{key}");
        }
        assert!("_system." < SYSTEM_PREFIX && "_system0" >= SYSTEM_END);
    }
}
