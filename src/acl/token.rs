//! Tokens: 256-bit random secrets, shown once and kept only as their SHA-256.
//!
//! A token is `cave_` followed by 32 random bytes from the operating system (`OsRng`) in unpadded
//! base64url: 48 characters, recognisable in a leaked log or a secret scanner by its prefix. A node keeps
//! only the token's SHA-256 ([`TokenHash`]): a token has full entropy, so a fast hash is enough (no bcrypt,
//! whose cost per request is what makes etcd's auth slow), and a stolen hash cannot be turned back into a
//! token. A request is authenticated by hashing what it sent and looking the hash up in a map, never by
//! comparing secrets. Each token also has an *accessor*, a public random id that names it in listings,
//! revocations, logs and the audit trail.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// What every token Cave makes starts with.
pub const TOKEN_PREFIX: &str = "cave_";
/// Random bytes of a token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Shortest root token an operator may configure: anything shorter could be guessed.
pub const MIN_ROOT_TOKEN_CHARS: usize = 16;
/// Longest token a request may carry; longer ones are refused before hashing.
pub const MAX_TOKEN_CHARS: usize = 512;

/// The SHA-256 of a token: what nodes store and look tokens up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of the token text `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Lower-case hex, as it appears in the token's key.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse the hex of [`TokenHash::to_hex`].
    pub fn from_hex(hex: &str) -> Option<TokenHash> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TokenHash(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but there is no reason to print it whole either.
        write!(f, "TokenHash({}..)", &self.to_hex()[..8])
    }
}

/// A fresh token (shown to its owner once, never stored).
pub fn generate() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A fresh accessor: 16 random bytes in hex, the public name of a token.
pub fn generate_accessor() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token in the configuration (the root token). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// Check a configured root token: at least [`MIN_ROOT_TOKEN_CHARS`] visible ASCII characters.
    pub fn parse(text: &str) -> Result<SecretToken, String> {
        let text = text.trim();
        if text.chars().count() < MIN_ROOT_TOKEN_CHARS {
            return Err(format!(
                "a root token needs at least {MIN_ROOT_TOKEN_CHARS} characters (`cave keygen` prints a good one)"
            ));
        }
        if text.len() > MAX_TOKEN_CHARS {
            return Err(format!("a root token has at most {MAX_TOKEN_CHARS} characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a root token may hold only visible ASCII characters".into());
        }
        Ok(SecretToken(text.to_string()))
    }

    /// The token text (to hash it, or to print it once when it was generated).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its hash.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hash_round_trips() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43, "{a}");
        let hash = TokenHash::of(&a);
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Some(hash));
        assert_ne!(TokenHash::of(&b), hash);
        assert!(TokenHash::from_hex("zz").is_none());
        assert!(TokenHash::from_hex(&"A".repeat(64)).is_none());
        assert_eq!(generate_accessor().len(), 32);
    }

    #[test]
    fn root_tokens_are_checked_and_never_printed() {
        assert!(SecretToken::parse("short").is_err());
        assert!(SecretToken::parse("has a space in it here").is_err());
        let token = SecretToken::parse("  0123456789abcdefXYZ ").unwrap();
        assert_eq!(token.expose(), "0123456789abcdefXYZ");
        assert_eq!(format!("{token:?}"), "<redacted>");
        assert!(!format!("{:?}", token.hash()).contains(&token.hash().to_hex()));
    }
}
