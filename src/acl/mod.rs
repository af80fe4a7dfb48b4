//! Access control: who a request comes from and what it may do.
//!
//! Every request is authenticated and authorised on the node it reaches, with no leader: tokens and
//! policies are ordinary replicated entries under `_system/acl/` ([`store`]), checked against an in-memory
//! cache that follows the change stream, so a check costs one SHA-256 and a map lookup.
//! - [`token`]: making tokens and hashing them (only hashes are stored);
//! - [`policy`]: prefix rules, capabilities and the compiled [`policy::Grant`] of a token;
//! - [`store`]: the entries, the cache ([`Acl`]) and the task that keeps it current;
//! - [`middleware`]: the HTTP layer and the [`Access`] handlers check keys with.
//!
//! docs/security.md states the threat model and what these guarantee.

pub mod cli;
pub mod middleware;
pub mod policy;
pub mod store;
pub mod token;

use std::sync::Arc;

pub use middleware::{Access, Enforcer};
pub use policy::Capability;
pub use store::Acl;

/// Who made a request, as the access-control layer established it.
///
/// The access-control middleware inserts it into the request's extensions (for handlers) and into the
/// response's extensions (for the layers outside it, such as the audit trail). It never holds the token
/// itself: only its public `accessor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The public id of the token that authenticated the request; `anonymous` when access control is off
    /// or the request carried no token.
    pub accessor: Arc<str>,
}

impl Caller {
    /// The caller of a request that carried no token (or of any request while access control is off).
    pub fn anonymous() -> Self {
        Caller {
            accessor: Arc::from("anonymous"),
        }
    }
}
