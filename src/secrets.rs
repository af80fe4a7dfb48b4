//! Key material and sealing: XSalsa20-Poly1305 (`crypto_secretbox`) under keys derived with HKDF-SHA256.
//!
//! One 32-byte master key (the cluster key, or in dev mode a key generated into the data directory) never
//! encrypts anything itself. Each use derives its own key with a distinct HKDF `info` label (domain
//! separation), so a value sealed for storage can never be replayed as a transport message and vice versa.
//!
//! A sealed blob is `nonce (24 bytes) || ciphertext+tag`, with a fresh random nonce per seal: 192-bit nonces
//! make random choice safe. Secrets at rest are kept as a printable *envelope*,
//! `cave-sealed:v1:<base64 of the blob>`, which is what a reader without `?secret=true` gets back, what an
//! export carries and what replicates: plaintext never leaves the API layer.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crypto_secretbox::aead::{Aead, AeadCore, KeyInit, OsRng};
use crypto_secretbox::XSalsa20Poly1305;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::error::{Error, Result};

/// Length of a master key in bytes.
pub const KEY_BYTES: usize = 32;
/// Length of an XSalsa20 nonce in bytes.
pub const NONCE_BYTES: usize = 24;
/// Prefix of a sealed secret envelope.
pub const ENVELOPE_PREFIX: &str = "cave-sealed:v1:";
/// HKDF label of the key that seals secret values.
pub const SECRETS_DOMAIN: &str = "cave/v1/secret-values";
/// HKDF label of the key that seals replication traffic.
pub const TRANSPORT_DOMAIN: &str = "cave/v1/transport";
/// HKDF label of the public cluster id (see [`MasterKey::cluster_id`]).
pub const CLUSTER_ID_DOMAIN: &str = "cave/v1/cluster-id";

/// A 32-byte master key. Never printed: `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_BYTES]);

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> MasterKey {
        let mut key = [0u8; KEY_BYTES];
        rand::RngCore::fill_bytes(&mut OsRng, &mut key);
        MasterKey(key)
    }

    /// Parse the base64 form (standard alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<MasterKey> {
        let text = text.trim();
        let bytes = B64
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| Error::invalid("the key is not valid base64"))?;
        let key: [u8; KEY_BYTES] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| Error::invalid(format!("the key must be {KEY_BYTES} bytes, got {}", b.len())))?;
        Ok(MasterKey(key))
    }

    /// The base64 form. Handle with care: this *is* the key.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Read a key file written by [`MasterKey::write_new`], or create one (mode 0600) if absent.
    pub fn load_or_create(path: &Path) -> Result<MasterKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::from_base64(&text)
                .map_err(|e| Error::Corrupt(format!("key file {} is unreadable: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey::generate();
                key.write_new(path)?;
                Ok(key)
            }
            Err(e) => Err(Error::internal(format!("cannot read key file {}: {e}", path.display()))),
        }
    }

    /// Write the key to a new file readable by its owner only.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|e| Error::internal(format!("cannot create key file {}: {e}", path.display())))?;
        file.write_all(self.to_base64().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        Ok(())
    }

    /// Derive the sealer of one domain (see the `*_DOMAIN` constants).
    pub fn sealer(&self, domain: &str) -> Sealer {
        Sealer {
            cipher: XSalsa20Poly1305::new(&self.derive(domain).into()),
        }
    }

    /// A public name of the cluster this key belongs to: 16 hex digits derived (HKDF, its own domain) from
    /// the key, so every node holding the same cluster key reports the same id and an operator can check
    /// that nodes share a key without seeing it. Safe to show: it reveals nothing about the key or the keys
    /// derived for other domains. A dev node without a cluster key reports the id of its local key.
    pub fn cluster_id(&self) -> String {
        self.derive(CLUSTER_ID_DOMAIN)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn derive(&self, domain: &str) -> [u8; KEY_BYTES] {
        let hk = Hkdf::<Sha256>::new(Some(b"cave"), &self.0);
        let mut okm = [0u8; KEY_BYTES];
        hk.expand(domain.as_bytes(), &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl fmt::Display for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Seals and opens with one derived key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XSalsa20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    /// `nonce || ciphertext` of `plaintext` under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext)
            .expect("XSalsa20-Poly1305 sealing cannot fail");
        let mut out = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Open a blob made by [`Sealer::seal`]; fails if it was sealed under another key or altered.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_BYTES + 16 {
            return Err(Error::Corrupt("sealed data is too short".into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(nonce.into(), ciphertext)
            .map_err(|_| Error::Forbidden("sealed data cannot be opened with this node's key".into()))
    }

    /// The printable envelope of `plaintext` (what a secret is stored as).
    pub fn seal_envelope(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = ENVELOPE_PREFIX.as_bytes().to_vec();
        out.extend_from_slice(B64.encode(self.seal(plaintext)).as_bytes());
        out
    }

    /// Open an envelope made by [`Sealer::seal_envelope`].
    pub fn open_envelope(&self, envelope: &[u8]) -> Result<Vec<u8>> {
        let body = envelope
            .strip_prefix(ENVELOPE_PREFIX.as_bytes())
            .ok_or_else(|| Error::Corrupt("value is not a sealed envelope".into()))?;
        let blob = B64
            .decode(body)
            .map_err(|_| Error::Corrupt("sealed envelope is not valid base64".into()))?;
        self.open(&blob)
    }
}

/// Whether `value` has the shape of a sealed envelope (used to validate imports of secrets).
pub fn is_envelope(value: &[u8]) -> bool {
    value
        .strip_prefix(ENVELOPE_PREFIX.as_bytes())
        .is_some_and(|body| B64.decode(body).is_ok_and(|blob| blob.len() >= NONCE_BYTES + 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_hides_plaintext() {
        let sealer = MasterKey::generate().sealer(SECRETS_DOMAIN);
        let envelope = sealer.seal_envelope(b"hunter2");
        assert!(is_envelope(&envelope));
        assert!(!envelope.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(sealer.open_envelope(&envelope).unwrap(), b"hunter2");
        // Fresh nonce every time.
        assert_ne!(sealer.seal_envelope(b"hunter2"), envelope);
    }

    #[test]
    fn wrong_key_domain_or_tampering_fails_cleanly() {
        let key = MasterKey::generate();
        let sealed = key.sealer(SECRETS_DOMAIN).seal(b"x");
        assert!(MasterKey::generate().sealer(SECRETS_DOMAIN).open(&sealed).is_err());
        assert!(key.sealer(TRANSPORT_DOMAIN).open(&sealed).is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(key.sealer(SECRETS_DOMAIN).open(&bad).is_err());
        assert!(key.sealer(SECRETS_DOMAIN).open(b"short").is_err());
        assert!(key.sealer(SECRETS_DOMAIN).open_envelope(b"cave-sealed:v1:!!").is_err());
    }

    #[test]
    fn cluster_id_is_stable_per_key_and_reveals_no_key() {
        let key = MasterKey::generate();
        let id = key.cluster_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(MasterKey::from_base64(&key.to_base64()).unwrap().cluster_id(), id);
        assert_ne!(MasterKey::generate().cluster_id(), id);
        assert!(!key.to_base64().contains(&id));
    }

    #[test]
    fn key_text_round_trips_and_rejects_garbage() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&key.to_base64()).unwrap(), key);
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64("c2hvcnQ=")
            .unwrap_err()
            .to_string()
            .contains("32 bytes"));
        assert_eq!(format!("{key:?} {key}"), "MasterKey(<redacted>) <redacted>");
    }

    #[test]
    fn key_file_is_created_once_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let a = MasterKey::load_or_create(&path).unwrap();
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
