//! mDNS discovery: announce this node as `_cave._tcp.local.` and find others of the same cluster on the LAN.
//!
//! The announcement carries the node id and the *cluster id* (derived from the cluster key, so it reveals
//! nothing about the key). Browsing yields every Cave node on the link; only those with our cluster id are
//! passed on, as seed addresses for membership gossip. mDNS only finds candidates: a node is admitted by
//! sealing, so a spoofed announcement gains nothing but a refused connection.

pub mod dns;

use std::collections::HashSet;

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

use crate::crdt::NodeId;
use crate::error::{Error, Result};

/// The DNS-SD service type of Cave's replication endpoint.
pub const SERVICE_TYPE: &str = "_cave._tcp.local.";

/// A running announcement and browser. Stops when dropped.
pub struct Mdns {
    daemon: ServiceDaemon,
}

impl Mdns {
    /// Announce node `me` of `cluster_id` on `grpc_port`; the returned receiver yields `ip:port` seed
    /// addresses of other nodes of the same cluster, each once.
    pub fn start(me: NodeId, cluster_id: &str, grpc_port: u16) -> Result<(Mdns, mpsc::UnboundedReceiver<String>)> {
        let unavailable = |e: mdns_sd::Error| Error::Unavailable(format!("mDNS: {e}"));
        let daemon = ServiceDaemon::new().map_err(unavailable)?;
        let properties = [("cluster", cluster_id.to_string()), ("node", me.to_string())];
        let host = format!("cave-{me}.local.");
        let info = ServiceInfo::new(SERVICE_TYPE, &me.to_string(), &host, "", grpc_port, &properties[..])
            .map_err(unavailable)?
            .enable_addr_auto();
        daemon.register(info).map_err(unavailable)?;
        let browse = daemon.browse(SERVICE_TYPE).map_err(unavailable)?;
        let (found, seeds) = mpsc::unbounded_channel();
        let cluster_id = cluster_id.to_string();
        let me = me.to_string();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            while let Ok(event) = browse.recv_async().await {
                let ServiceEvent::ServiceResolved(service) = event else {
                    continue;
                };
                if service.get_property_val_str("cluster") != Some(cluster_id.as_str())
                    || service.get_property_val_str("node") == Some(me.as_str())
                {
                    continue;
                }
                for ip in &service.addresses {
                    if ip.is_loopback() {
                        continue;
                    }
                    let addr = match ip.to_ip_addr() {
                        std::net::IpAddr::V4(v4) => format!("{v4}:{}", service.port),
                        std::net::IpAddr::V6(v6) if !v6.is_unicast_link_local() => format!("[{v6}]:{}", service.port),
                        std::net::IpAddr::V6(_) => continue,
                    };
                    if seen.insert(addr.clone()) {
                        tracing::info!(%addr, "found a peer by mDNS");
                        if found.send(addr).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok((Mdns { daemon }, seeds))
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}
