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
