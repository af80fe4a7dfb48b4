//! Leases on the database: grant, renew, revoke, and what a lease holds ([`crate::crdt::lease`] is the rule).
//!
//! A lease's entry stores its TTL ([`lease::lease_value`]) so that a renewal on any node extends it by the
//! same amount; the entry's expiry is the lease's end on the hybrid clock.

use std::time::Duration;

use serde::Serialize;

use super::{Db, Op, Outcome, Shared};
use crate::crdt::{expiry, hlc, lease, Entry, LeaseId, Version};
use crate::error::{Error, Result};

/// Keys [`Db::lease`] lists at most (a lease's bound keys can be many; the count is always exact).
pub const LEASE_KEYS_SHOWN: usize = 1000;

/// A lease as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    /// Its id.
    pub id: LeaseId,
    /// The TTL each grant or renewal gives it, as written (`10s`).
    pub ttl: String,
    /// The same in milliseconds.
    pub ttl_ms: u64,
    /// When it ends unless renewed (Unix milliseconds, cluster clock).
    pub expires_ms: u64,
    /// How many live values are bound to it.
    pub keys: usize,
    /// The version of its latest grant or renewal.
    pub version: Version,
}

/// A lease with (up to [`LEASE_KEYS_SHOWN`] of) the keys bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseDetail {
    /// The lease.
    #[serde(flatten)]
    pub info: LeaseInfo,
    /// The first keys bound to it, in key order.
    pub bound: Vec<String>,
}

fn ttl_of(entry: &Entry) -> Result<u64> {
    lease::ttl_ms_of(entry).ok_or_else(|| Error::internal(format!("lease entry {} does not hold a TTL", entry.key)))
}

fn info(entry: &Entry, id: LeaseId, keys: usize) -> Result<LeaseInfo> {
    let ttl_ms = ttl_of(entry)?;
    Ok(LeaseInfo {
        id,
        ttl: crate::config::format_duration(Duration::from_millis(ttl_ms)),
        ttl_ms,
        expires_ms: entry.expires.map_or(0, |at| hlc::physical_ms(at.get())),
        keys,
        version: entry.version,
    })
}

fn not_found(id: LeaseId) -> Error {
    Error::NotFound(format!("lease {id} not found: it ended or never existed"))
}

/// The renewal of lease `id` whose entry is `current`, by the writer: a later write of the same TTL from now.
/// A lease that has ended (even one past its expiry the sweep has not reached) is not renewed: it is a 404.
pub(super) fn renewed(shared: &Shared, current: Option<Entry>, id: LeaseId) -> Result<Entry> {
    let now = shared.hlc.reading();
    let current = current.filter(|e| e.live_at(now)).ok_or_else(|| not_found(id))?;
    let ttl_ms = ttl_of(&current)?;
    let version = Version::new(shared.hlc.tick_after(current.version.hlc)?, shared.node);
    Ok(Entry {
        version,
        expires: Some(expiry::at(lease::expires_after(version, ttl_ms))),
        ..current
    })
}

impl Db {
    /// Grant a new lease of `ttl`.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseInfo> {
        let id = LeaseId::random();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let op = Op::Put {
            key: id.key(),
            value: lease::lease_value(ttl_ms),
            content_type: "application/json".into(),
            secret: false,
            // Ids are random: a grant never meets an entry of its id, and must not replace one if it did.
            cas: Some(Version::ZERO),
            ttl: Some(ttl),
            lease: None,
        };
        let entry = self.written(self.write(vec![op]).await?)?;
        info(&entry, id, 0)
    }

    /// Renew lease `id` by its TTL from now (404 if it has ended).
    pub async fn renew_lease(&self, id: LeaseId) -> Result<LeaseInfo> {
        let entry = self.written(self.write(vec![Op::RenewLease { id }]).await?)?;
        let keys = self.with_state(|state| state.bound().keys(id).count());
        info(&entry, id, keys)
    }

    /// Revoke lease `id`: it ends now, and with it every value bound to it (they read as absent from now on;
    /// the sweep collects them). Returns how many values it held. 404 if it had ended already.
    pub async fn revoke_lease(&self, id: LeaseId) -> Result<usize> {
        let now = self.shared.hlc.reading();
        let (live, keys) = self.with_state(|state| (state.lease_live(id, now), state.bound().keys(id).count()));
        if !live {
            return Err(not_found(id));
        }
        // No `cas`: a renewal committed since the read is revoked with the rest (that is what was asked), and a
        // lease that expired meanwhile gets a later tombstone, which changes nothing of what it ended.
        self.write(vec![Op::Delete {
            key: id.key(),
            cas: None,
        }])
        .await?;
        Ok(keys)
    }

    /// Lease `id` if live, with the first keys bound to it.
    pub fn lease(&self, id: LeaseId) -> Result<LeaseDetail> {
        let now = self.shared.hlc.reading();
        self.with_state(|state| {
            let entry = state.get_live_at(&id.key(), now).ok_or_else(|| not_found(id))?;
            let bound: Vec<String> = state.bound().keys(id).map(str::to_string).collect();
            let info = info(entry, id, bound.len())?;
            let bound = bound.into_iter().take(LEASE_KEYS_SHOWN).collect();
            Ok(LeaseDetail { info, bound })
        })
    }

    /// Whether lease `id` is live on this node.
    pub fn lease_live(&self, id: LeaseId) -> bool {
        let now = self.shared.hlc.reading();
        self.with_state(|state| state.lease_live(id, now))
    }

    /// The live leases, by id.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let now = self.shared.hlc.reading();
        self.with_state(|state| {
            state
                .range_prefix(crate::crdt::lease::LEASE_PREFIX)
                .filter(|e| e.live_at(now))
                .filter_map(|e| LeaseId::of_key(&e.key).map(|id| (e, id)))
                .map(|(e, id)| info(e, id, state.bound().keys(id).count()))
                .collect()
        })
    }

    fn written(&self, outcomes: Vec<Outcome>) -> Result<Entry> {
        match outcomes.into_iter().next() {
            Some(Outcome::Written(entry)) => Ok(entry),
            _ => Err(Error::internal("write returned no outcome")),
        }
    }
}
