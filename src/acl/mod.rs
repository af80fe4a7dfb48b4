//! Access control: who a request comes from and what it may do.
//!
//! This module is being built by the access-control work (issue 10); the types below are the interface the
//! other layers (the audit trail first) build against.

use std::sync::Arc;

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
