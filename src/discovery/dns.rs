//! DNS discovery: a `dns:NAME:PORT` peer names every member at once (a Kubernetes headless service, a
//! compose service run with `--scale`). The name is resolved every [`RESOLVE_INTERVAL`] (every
//! [`RESOLVE_RETRY`] while it resolves to nothing, as while the service's first members start) and the
//! addresses it returns replace the seeds it returned before (see [`Core::replace_seeds`]), so the node
//! dials each new member and forgets addresses that are gone. This node's own addresses (those its host name
//! resolves to) are left out.
//!
//! Like mDNS, DNS only finds candidates: a node is admitted by sealing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::replication::Core;

/// How a DNS peer is written in `peers`.
pub const PREFIX: &str = "dns:";
/// How often a name that resolved is resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a name that resolved to nothing (or failed) is tried again.
pub const RESOLVE_RETRY: Duration = Duration::from_millis(500);

/// The `NAME:PORT` of a `dns:NAME:PORT` peer, `None` for a plain address.
pub fn name_of(peer: &str) -> Option<&str> {
    peer.strip_prefix(PREFIX)
}

/// Resolve each of `peers` (`dns:NAME:PORT`) periodically into `core`'s seeds until `stop` changes. `None`
/// when there is nothing to resolve. The task ends when `stop` does; its owner awaits it.
pub fn spawn(peers: Vec<String>, core: Arc<Mutex<Core>>, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    if peers.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut logged_failure = vec![false; peers.len()];
        loop {
            let mut all_found = true;
            for (i, peer) in peers.iter().enumerate() {
                let Some(name) = name_of(peer) else { continue };
                let port = name
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .unwrap_or(0);
                let found = tokio::select! {
                    _ = stop.changed() => return,
                    found = resolve(name) => found,
                };
                let own = own_addrs(port).await;
                let addrs: Vec<String> = match found {
                    Ok(addrs) => {
                        logged_failure[i] = false;
                        addrs
                            .into_iter()
                            .filter(|a| !own.contains(a))
                            .map(|a| a.to_string())
                            .collect()
                    }
                    Err(e) => {
                        if !logged_failure[i] {
                            tracing::warn!(peer = %peer, error = %e, "cannot resolve the DNS peer name; retrying");
                            logged_failure[i] = true;
                        }
                        all_found = false;
                        continue;
                    }
                };
                if addrs.is_empty() {
                    all_found = false;
                }
                tracing::debug!(peer = %peer, found = addrs.len(), "resolved the DNS peer name");
                core.lock().replace_seeds(peer, addrs);
            }
            let wait = if all_found { RESOLVE_INTERVAL } else { RESOLVE_RETRY };
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }))
}

/// The addresses `NAME:PORT` resolves to, sorted and deduplicated.
async fn resolve(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(name).await?.collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// This host's addresses on `port` (what its name resolves to), so that a node does not dial itself.
async fn own_addrs(port: u16) -> Vec<SocketAddr> {
    let host = crate::config::hostname();
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|a| a.collect())
        .unwrap_or_default()
}
