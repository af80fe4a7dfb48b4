//! The gRPC transport adapter: carries replication [`Message`]s between nodes, sealed.
//!
//! Every message is wrapped in an envelope (cluster id, sender id, body), encoded with protobuf and sealed
//! with XSalsa20-Poly1305 under the transport key (HKDF of the cluster key, domain `cave/v1/transport`), then
//! sent as the single field of a `Frame` through the unary `Deliver` RPC. The receiver opens the frame
//! *before* decoding anything: a frame sealed under another key, garbage, or a message of another cluster is
//! rejected, logged and counted, and nothing of it reaches the replication core. Generated protobuf types
//! stay in this module; `convert` is the one place they meet domain types.

mod client;
mod convert;
mod server;

use prost::Message as _;

use crate::crdt::NodeId;
use crate::error::{Error, Result};
use crate::replication::Message;
use crate::secrets::Sealer;

pub use client::{Dialer, Transport, REDIAL_AFTER_TIMEOUTS};
pub use server::{serve, ReplicationService, MAX_CONCURRENT_STREAMS};

/// Generated protobuf and tonic code of `proto/cave.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("cave.v1");
}

/// Largest frame accepted or sent, in bytes. Messages are split well below it (see `CoreConfig`).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Seals outgoing messages and opens incoming frames for one node of one cluster.
#[derive(Clone, Debug)]
pub struct Codec {
    sealer: Sealer,
    cluster_id: String,
    me: NodeId,
}

impl Codec {
    /// A codec for node `me` of `cluster_id`, sealing with the transport `sealer`.
    pub fn new(sealer: Sealer, cluster_id: String, me: NodeId) -> Codec {
        Codec { sealer, cluster_id, me }
    }

    /// The sealed frame of a message from this node.
    pub fn seal(&self, msg: &Message) -> Vec<u8> {
        let envelope = pb::Envelope {
            cluster_id: self.cluster_id.clone(),
            from: self.me.0,
            body: Some(convert::message_out(msg)),
        };
        self.sealer.seal(&envelope.encode_to_vec())
    }

    /// Open and validate a frame: who sent it, and what.
    pub fn open(&self, sealed: &[u8]) -> Result<(NodeId, Message)> {
        let plain = self
            .sealer
            .open(sealed)
            .map_err(|_| Error::Unauthorized("frame does not open under this cluster's key".into()))?;
        let envelope = pb::Envelope::decode(plain.as_slice())
            .map_err(|e| Error::Corrupt(format!("undecodable replication envelope: {e}")))?;
        if envelope.cluster_id != self.cluster_id {
            return Err(Error::Forbidden("message from another cluster".into()));
        }
        if envelope.from == 0 {
            return Err(Error::Corrupt("envelope without a sender".into()));
        }
        let body = envelope
            .body
            .ok_or_else(|| Error::Corrupt("envelope without a body".into()))?;
        Ok((NodeId(envelope.from), convert::message_in(body)?))
    }
}

/// The one mapping from [`Error`] categories to gRPC status codes.
pub fn status(err: &Error) -> tonic::Status {
    use tonic::Code;
    let code = match err {
        Error::InvalidInput(_) => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::Unauthorized(_) => Code::Unauthenticated,
        Error::Forbidden(_) => Code::PermissionDenied,
        Error::Conflict(_) => Code::Aborted,
        Error::PreconditionFailed(_) | Error::Unprocessable(_) => Code::FailedPrecondition,
        Error::TooLarge(_) => Code::ResourceExhausted,
        Error::Unavailable(_) | Error::ClockSkew(_) => Code::Unavailable,
        Error::StorageFull(_) => Code::ResourceExhausted,
        Error::UnsupportedMediaType(_) | Error::MisdirectedRequest(_) => Code::InvalidArgument,
        Error::Corrupt(_) => Code::DataLoss,
        Error::Internal(_) => Code::Internal,
    };
    tonic::Status::new(code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{MasterKey, TRANSPORT_DOMAIN};

    #[test]
    fn frames_open_only_for_the_same_key_and_cluster() {
        let key = MasterKey::generate();
        let a = Codec::new(key.sealer(TRANSPORT_DOMAIN), "c1".into(), NodeId(1));
        let b = Codec::new(key.sealer(TRANSPORT_DOMAIN), "c1".into(), NodeId(2));
        let msg = Message::AeRoot {
            session: 7,
            root: 42,
            authority: 3,
        };
        assert_eq!(b.open(&a.seal(&msg)).unwrap(), (NodeId(1), msg.clone()));
        let stranger = Codec::new(MasterKey::generate().sealer(TRANSPORT_DOMAIN), "c1".into(), NodeId(3));
        assert!(matches!(stranger.open(&a.seal(&msg)), Err(Error::Unauthorized(_))));
        let other_cluster = Codec::new(key.sealer(TRANSPORT_DOMAIN), "c2".into(), NodeId(3));
        assert!(matches!(other_cluster.open(&a.seal(&msg)), Err(Error::Forbidden(_))));
        assert!(b.open(b"garbage").is_err());
        // Sealed garbage (right key, not a protobuf envelope) is rejected too.
        assert!(matches!(
            b.open(&key.sealer(TRANSPORT_DOMAIN).seal(&[0xff; 40])),
            Err(Error::Corrupt(_))
        ));
    }
}
