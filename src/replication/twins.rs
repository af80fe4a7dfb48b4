//! Two live processes under one node id (a copied data directory or VM image): what the core does once its
//! membership finds the other one (the detection rule is in `membership`, see [`super::membership::Twin`]).
//!
//! Both report it once ([`CoreEvent::DuplicateNodeId`]). The one that must stop falls *silent*: it sends
//! nothing (no gossip, deltas or rounds) and drops what it is sent, so that peers hear of the id from one
//! process only and settle on its address, while the other keeps taking incarnations past it until the peers
//! do. Each tells the other directly, with a gossip to the address in its record, because the other may not
//! have seen the pattern yet (it may only know this node through a seed that is this node's own address).

use super::core::{Core, CoreEvent, Destination, Effects};
use super::message::Message;
use crate::crdt::NodeId;

impl Core {
    /// A message from our own id (ours come back, or a twin's), or any message while refusing.
    pub(super) fn on_message_from_own_id(&mut self, now_ms: u64, from: NodeId, msg: &Message, fx: &mut Effects) {
        if from != self.id() {
            return;
        }
        if let Message::Gossip { records, .. } = msg {
            self.membership.gossip_from_own_id(records);
            self.report_twin(now_ms, fx);
        }
    }

    /// Report a twin found since the last call, and tell it.
    pub(super) fn report_twin(&mut self, now_ms: u64, fx: &mut Effects) {
        let Some(twin) = self.membership.take_new_twin() else {
            return;
        };
        if twin.grpc_addr != self.membership.me().grpc_addr {
            fx.sends.push((
                Destination::Addr(twin.grpc_addr.clone()),
                Message::Gossip {
                    records: vec![self.membership.me().clone()],
                    reply: false,
                    now_ms,
                },
            ));
        }
        fx.events.push(CoreEvent::DuplicateNodeId {
            grpc_addr: twin.grpc_addr,
            refusing: twin.refuse,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::LwwMap;
    use crate::replication::{CoreConfig, PeerRecord};

    fn record(addr: &str, incarnation: u64, heartbeat: u64) -> PeerRecord {
        PeerRecord {
            id: NodeId(1),
            grpc_addr: addr.into(),
            http_addr: String::new(),
            incarnation,
            heartbeat,
            left: false,
            version: String::new(),
            keys: 0,
        }
    }

    #[test]
    fn the_younger_twin_reports_it_tells_the_other_and_falls_silent_even_when_leaving() {
        let state = LwwMap::new();
        let mut core = Core::new(
            CoreConfig::default(),
            record("copy:2000", 10, 0),
            vec!["a:2000".into()],
            1,
            10,
        );
        let gossip = Message::Gossip {
            records: vec![record("original:2000", 5, 900)],
            reply: true,
            now_ms: 10,
        };
        let fx = core.on_message(10, NodeId(1), gossip, &state);
        assert_eq!(
            fx.events,
            vec![CoreEvent::DuplicateNodeId {
                grpc_addr: "original:2000".into(),
                refusing: true
            }]
        );
        assert!(matches!(&fx.sends[..], [(Destination::Addr(a), Message::Gossip { .. })] if a == "original:2000"));
        assert!(core.on_tick(1_000, &state).sends.is_empty(), "no gossip, no seeds");
        assert!(core.leave(2_000).sends.is_empty(), "no leave under the original's id");
        let mut fx = Effects::default();
        assert!(core.start_anti_entropy(3_000, &state, &mut fx).is_none());
    }
}
