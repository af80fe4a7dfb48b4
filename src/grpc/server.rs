//! The receiving side: a tonic service that opens frames and hands messages to the cluster driver.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use super::pb::replication_server::{Replication, ReplicationServer};
use super::{pb, status, Codec, MAX_FRAME_BYTES};
use crate::crdt::NodeId;
use crate::error::{Error, Result};
use crate::metrics::{Direction, Metrics};
use crate::replication::Message;
use crate::telemetry::limiter::LogLimiter;

/// Deliveries one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;

/// Opens incoming frames and queues their messages for the driver.
pub struct ReplicationService {
    codec: Codec,
    inbox: mpsc::Sender<(NodeId, Message)>,
    /// Counts frames that fail to open or decode (`cave_seal_failures_total`).
    metrics: Arc<Metrics>,
    /// One warning per peer address per interval about rejected frames.
    rejections: LogLimiter,
}

impl ReplicationService {
    /// A service delivering into `inbox`.
    pub fn new(codec: Codec, inbox: mpsc::Sender<(NodeId, Message)>, metrics: Arc<Metrics>) -> Self {
        ReplicationService {
            codec,
            inbox,
            metrics,
            rejections: LogLimiter::default(),
        }
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn deliver(&self, request: Request<pb::Frame>) -> std::result::Result<Response<pb::Ack>, Status> {
        let remote = request.remote_addr();
        let frame = request.into_inner();
        let (from, msg) = match self.codec.open(&frame.sealed) {
            Ok(opened) => opened,
            Err(err) => {
                self.metrics.seal_failure();
                // By IP: a peer sending garbage reconnects from a new port each time.
                let peer = remote.map_or_else(|| "unknown".to_string(), |addr| addr.ip().to_string());
                if let Some(suppressed) = self.rejections.check(&peer) {
                    tracing::warn!(%peer, error = %err, suppressed, "rejected a replication frame");
                }
                return Err(status(&err));
            }
        };
        if msg.kind().starts_with("ae_") {
            self.metrics
                .anti_entropy_bytes(Direction::Received, frame.sealed.len() as u64);
        }
        // Waiting here (rather than dropping) pushes back on a peer that sends faster than we apply.
        self.inbox
            .send((from, msg))
            .await
            .map_err(|_| status(&Error::Unavailable("node is shutting down".into())))?;
        Ok(Response::new(pb::Ack {}))
    }
}

/// Serve the replication service on the connections `incoming` yields until `shutdown` resolves.
///
/// A node passes its TCP listener's stream; the simulation passes connections of its simulated network.
pub async fn serve<I, IO, IE>(
    incoming: I,
    service: ReplicationService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()>
where
    I: Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = ReplicationServer::new(service)
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    tonic::transport::Server::builder()
        // Each open stream holds a decoded frame while it waits for room in the driver's inbox: bound them
        // per connection (a peer's transport keeps at most 32 deliveries in flight; the rest wait on its side).
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("replication server failed: {e}")))
}
