//! The replicated ACL data (entries under `_system/acl/`) and the in-memory cache requests are checked
//! against.
//!
//! Policies live at `_system/acl/policies/<name>` and tokens at `_system/acl/tokens/<sha256-hex>`, as JSON
//! entries written through the database like any key: the CRDT, anti-entropy and the simulation treat them
//! as they treat user keys, so a token made on one node works on every node once replicated, and a
//! revocation (a tombstone) wins over the token by version as any delete does. No leader decides anything.
//!
//! The cache ([`Acl`]) maps token hashes to their record and compiled [`Grant`]. It is filled from the
//! database at start and kept current by a task that follows the change stream ([`Acl::follow`]): a change
//! under `_system/acl/` re-reads that key from the map (so events that arrive late or out of order are
//! harmless: the map holds the winning version). A local ACL write also updates the cache before it is
//! answered, so a token works on the node that made it as soon as it is returned. If the task falls behind
//! the stream (`Lagged`), it reloads everything.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::policy::{Grant, Policy, ADMIN_POLICY};
use super::token::{SecretToken, TokenHash};
use crate::db::{Db, Op};
use crate::error::{Error, Result};

/// Every ACL entry is below this.
pub const ACL_PREFIX: &str = "_system/acl/";
/// Token entries: this plus the token's SHA-256 in hex.
pub const TOKENS_PREFIX: &str = "_system/acl/tokens/";
/// Policy entries: this plus the policy's name.
pub const POLICIES_PREFIX: &str = "_system/acl/policies/";
/// The accessor of the root token.
pub const ROOT_ACCESSOR: &str = "root";

/// A token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its public id.
    pub accessor: String,
    /// The policies it holds, by name.
    pub policies: Vec<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it stops working, milliseconds since the Unix epoch; `None`: never.
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// An authenticated token, as a request carries it.
#[derive(Debug)]
pub struct Authority {
    /// The token's accessor.
    pub accessor: Arc<str>,
    /// Its record (for `whoami`).
    pub record: TokenRecord,
    /// What it may do.
    pub grant: Grant,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token has this hash (never made, revoked, or not replicated here yet).
    Unknown,
    /// The token's expiry has passed.
    Expired,
}

#[derive(Default)]
struct Cache {
    policies: HashMap<String, Policy>,
    tokens: HashMap<TokenHash, Arc<Authority>>,
    by_accessor: HashMap<String, TokenHash>,
}

impl Cache {
    fn compile(&self, record: TokenRecord) -> Authority {
        let grant = if record.policies.iter().any(|p| p == ADMIN_POLICY) {
            Grant::everything()
        } else {
            Grant::of(record.policies.iter().filter_map(|name| self.policies.get(name)))
        };
        Authority {
            accessor: Arc::from(record.accessor.as_str()),
            record,
            grant,
        }
    }

    fn recompile(&mut self) {
        let records: Vec<(TokenHash, TokenRecord)> = self
            .tokens
            .iter()
            .map(|(hash, auth)| (*hash, auth.record.clone()))
            .collect();
        for (hash, record) in records {
            let compiled = Arc::new(self.compile(record));
            self.tokens.insert(hash, compiled);
        }
    }
}

/// The access-control state of a node: on or off, the root token, and the cache of tokens and policies.
pub struct Acl {
    enabled: bool,
    root: Option<(TokenHash, Arc<Authority>)>,
    cache: RwLock<Cache>,
    db: Db,
}

impl Acl {
    /// The ACL of a node over `db`, loaded from it. `root`: the configured root token, if any.
    pub fn new(db: Db, enabled: bool, root: Option<&SecretToken>) -> Arc<Acl> {
        let root = root.map(|token| {
            let record = TokenRecord {
                accessor: ROOT_ACCESSOR.into(),
                policies: vec![ADMIN_POLICY.into()],
                description: "root token from the configuration".into(),
                created_ms: 0,
                expires_ms: None,
            };
            let authority = Authority {
                accessor: Arc::from(ROOT_ACCESSOR),
                record,
                grant: Grant::everything(),
            };
            (token.hash(), Arc::new(authority))
        });
        let acl = Arc::new(Acl {
            enabled,
            root,
            cache: RwLock::new(Cache::default()),
            db,
        });
        acl.reload_all();
        acl
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The database the ACL entries live in.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The token whose hash is `hash`, if it is valid now: a map lookup.
    pub fn authenticate(&self, hash: &TokenHash) -> std::result::Result<Arc<Authority>, Refusal> {
        if let Some((root, authority)) = &self.root {
            if root == hash {
                return Ok(authority.clone());
            }
        }
        let authority = self.cache.read().tokens.get(hash).cloned().ok_or(Refusal::Unknown)?;
        match authority.record.expires_ms {
            Some(expires) if self.db.hlc().time_ms() >= expires => Err(Refusal::Expired),
            _ => Ok(authority),
        }
    }

    /// Follow the change stream until the database shuts down, keeping the cache current. The caller owns
    /// the task this runs in and waits for it at shutdown.
    pub async fn follow(self: Arc<Acl>, mut changes: tokio::sync::broadcast::Receiver<Arc<crate::db::Change>>) {
        let closing = self.db.shutting_down();
        tokio::pin!(closing);
        // Changes made between the load in `new` and this subscription would otherwise be missed.
        self.reload_all();
        loop {
            tokio::select! {
                _ = &mut closing => return,
                change = changes.recv() => match change {
                    Ok(change) if change.key.starts_with(ACL_PREFIX) => self.reload_key(&change.key),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.reload_all(),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// Read every ACL entry from the database into the cache.
    pub fn reload_all(&self) {
        let entries: Vec<crate::crdt::Entry> = self.db.with_state(|state| {
            state
                .range_from(ACL_PREFIX, std::ops::Bound::Unbounded)
                .take_while(|e| e.key.starts_with(ACL_PREFIX))
                .cloned()
                .collect()
        });
        let mut cache = Cache::default();
        for entry in entries.iter().filter(|e| !e.deleted) {
            if let Some(name) = entry.key.strip_prefix(POLICIES_PREFIX) {
                if let Some(policy) = parse_policy(entry) {
                    cache.policies.insert(name.to_string(), policy);
                }
            }
        }
        for entry in entries.iter().filter(|e| !e.deleted) {
            if let Some((hash, record)) = parse_token(entry) {
                cache.by_accessor.insert(record.accessor.clone(), hash);
                let compiled = Arc::new(cache.compile(record));
                cache.tokens.insert(hash, compiled);
            }
        }
        *self.cache.write() = cache;
    }

    /// Bring one ACL key of the cache up to the database's current entry.
    pub fn reload_key(&self, key: &str) {
        let entry = self.db.with_state(|state| state.get_live(key).cloned());
        let mut cache = self.cache.write();
        if let Some(name) = key.strip_prefix(POLICIES_PREFIX) {
            match entry.as_ref().and_then(parse_policy) {
                Some(policy) => cache.policies.insert(name.to_string(), policy),
                None => cache.policies.remove(name),
            };
            cache.recompile();
        } else if let Some(hex) = key.strip_prefix(TOKENS_PREFIX) {
            let Some(hash) = TokenHash::from_hex(hex) else { return };
            if let Some(old) = cache.tokens.remove(&hash) {
                cache.by_accessor.remove(&old.record.accessor);
            }
            if let Some((hash, record)) = entry.as_ref().and_then(parse_token) {
                cache.by_accessor.insert(record.accessor.clone(), hash);
                let compiled = Arc::new(cache.compile(record));
                cache.tokens.insert(hash, compiled);
            }
        }
    }

    /// Every policy, by name.
    pub fn policies(&self) -> Vec<(String, Policy)> {
        let mut all: Vec<_> = self
            .cache
            .read()
            .policies
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// One policy.
    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.cache.read().policies.get(name).cloned()
    }

    /// Every stored token's record (the configured root token is not stored), by accessor.
    pub fn tokens(&self) -> Vec<TokenRecord> {
        let mut all: Vec<_> = self.cache.read().tokens.values().map(|a| a.record.clone()).collect();
        all.sort_by(|a, b| a.accessor.cmp(&b.accessor));
        all
    }

    /// Store a policy.
    pub async fn put_policy(&self, name: &str, policy: &Policy) -> Result<()> {
        let key = format!("{POLICIES_PREFIX}{name}");
        self.put(&key, serde_json::to_vec(policy).map_err(Error::internal)?)
            .await
    }

    /// Delete a policy; `NotFound` if there is none.
    pub async fn delete_policy(&self, name: &str) -> Result<()> {
        if self.policy(name).is_none() {
            return Err(Error::NotFound(format!("no policy named {name:?}")));
        }
        self.delete(&format!("{POLICIES_PREFIX}{name}")).await
    }

    /// Store a token's record under its hash.
    pub async fn put_token(&self, hash: &TokenHash, record: &TokenRecord) -> Result<()> {
        let key = format!("{TOKENS_PREFIX}{}", hash.to_hex());
        self.put(&key, serde_json::to_vec(record).map_err(Error::internal)?)
            .await
    }

    /// Revoke the token named `accessor`; `NotFound` if no stored token has it.
    pub async fn revoke(&self, accessor: &str) -> Result<()> {
        let hash = self.cache.read().by_accessor.get(accessor).copied();
        match hash {
            Some(hash) => self.delete(&format!("{TOKENS_PREFIX}{}", hash.to_hex())).await,
            None if accessor == ROOT_ACCESSOR && self.root.is_some() => Err(Error::Conflict(
                "the configured root token is not stored, so it cannot be revoked: remove acl_root_token from \
                 the nodes' configuration"
                    .into(),
            )),
            None => Err(Error::NotFound(format!("no token with accessor {accessor:?}"))),
        }
    }

    /// Whether any token is stored (a founding node makes a root token only into an empty ACL).
    pub fn has_tokens(&self) -> bool {
        !self.cache.read().tokens.is_empty()
    }

    async fn put(&self, key: &str, json: Vec<u8>) -> Result<()> {
        let op = Op::Put {
            key: key.to_string(),
            value: Bytes::from(json),
            content_type: "application/json".into(),
            secret: false,
            cas: None,
            ttl: None,
            lease: None,
        };
        self.db.write(vec![op]).await?;
        self.reload_key(key);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.db
            .write(vec![Op::Delete {
                key: key.to_string(),
                cas: None,
            }])
            .await?;
        self.reload_key(key);
        Ok(())
    }
}

/// A stored policy; `None` (skipped, with a warning) if the entry is not one, which only a bug or a newer
/// version of Cave could write.
fn parse_policy(entry: &crate::crdt::Entry) -> Option<Policy> {
    match serde_json::from_slice::<Policy>(&entry.value) {
        Ok(policy) => Some(policy),
        Err(e) => {
            tracing::warn!(key = %entry.key, error = %e, "ignoring an unreadable ACL policy entry");
            None
        }
    }
}

fn parse_token(entry: &crate::crdt::Entry) -> Option<(TokenHash, TokenRecord)> {
    let hash = TokenHash::from_hex(entry.key.strip_prefix(TOKENS_PREFIX)?)?;
    match serde_json::from_slice::<TokenRecord>(&entry.value) {
        Ok(record) => Some((hash, record)),
        Err(e) => {
            tracing::warn!(key = %entry.key, error = %e, "ignoring an unreadable ACL token entry");
            None
        }
    }
}
