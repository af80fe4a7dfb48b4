//! The sending side: one bounded queue and one sender task per peer address.
//!
//! A slow or unreachable peer must never hold up the node or the other peers. Each peer gets its own task
//! with a queue of [`PEER_QUEUE_FRAMES`]; when it is full, new frames to that peer are dropped and counted
//! (anti-entropy repairs whatever a dropped delta carried). Channels connect lazily and reconnect on their
//! own; HTTP/2 keep-alives detect a connection that a partition black-holed, so it recovers after repair.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use super::pb::replication_client::ReplicationClient;
use super::{pb, Codec, MAX_FRAME_BYTES};
use crate::replication::Message;

/// Frames that may wait for one peer before newer ones are dropped.
pub const PEER_QUEUE_FRAMES: usize = 1024;
/// Deliveries to one peer that may be under way at once.
const MAX_IN_FLIGHT: usize = 32;
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one delivery may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive ping interval and timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of the sending side.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames handed to a peer's queue.
    pub queued: AtomicU64,
    /// Frames dropped because a peer's queue was full.
    pub dropped: AtomicU64,
    /// Deliveries that failed (peer unreachable, refused).
    pub failed: AtomicU64,
    /// Bytes of sealed frames delivered.
    pub bytes_sent: AtomicU64,
}

/// Sends messages to peers by address.
pub struct Transport {
    codec: Codec,
    peers: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
    /// Counters.
    pub stats: Arc<TransportStats>,
}

impl Transport {
    /// A transport sealing with `codec`.
    pub fn new(codec: Codec) -> Transport {
        Transport {
            codec,
            peers: Mutex::new(HashMap::new()),
            stats: Arc::default(),
        }
    }

    /// Queue `msg` for the node at `addr`. Returns the sealed frame's size, or `None` if it was dropped
    /// (queue full or bad address).
    pub fn send(&self, addr: &str, msg: &Message) -> Option<usize> {
        let frame = self.codec.seal(msg);
        let len = frame.len();
        let sender = {
            let mut peers = self.peers.lock();
            match peers.get(addr) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => match spawn_peer(addr, self.stats.clone()) {
                    Some(tx) => {
                        peers.insert(addr.to_string(), tx.clone());
                        tx
                    }
                    None => {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                },
            }
        };
        match sender.try_send(frame) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Some(len)
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stop every peer task (their queues are dropped).
    pub fn close(&self) {
        self.peers.lock().clear();
    }
}

fn spawn_peer(addr: &str, stats: Arc<TransportStats>) -> Option<mpsc::Sender<Vec<u8>>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tracing::warn!(%addr, error = %e, "bad peer address"))
        .ok()?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect_lazy();
    let client = ReplicationClient::new(channel)
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PEER_QUEUE_FRAMES);
    let addr = addr.to_string();
    tokio::spawn(async move {
        // Deliveries are pipelined over the one HTTP/2 connection: waiting for each answer before sending the
        // next would cap a peer at one frame per round trip and let a burst of commits queue up as lag.
        // Order does not matter (every message is a merge or idempotent).
        let mut in_flight = FuturesUnordered::new();
        let failing = Arc::new(AtomicBool::new(false));
        loop {
            tokio::select! {
                frame = rx.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    let Some(sealed) = frame else { break };
                    let mut client = client.clone();
                    let (stats, addr, failing) = (stats.clone(), addr.clone(), failing.clone());
                    in_flight.push(async move {
                        let len = sealed.len() as u64;
                        match client.deliver(pb::Frame { sealed }).await {
                            Ok(_) => {
                                stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                                if failing.swap(false, Ordering::Relaxed) {
                                    tracing::info!(peer = %addr, "peer reachable again");
                                }
                            }
                            Err(status) => {
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                                if !failing.swap(true, Ordering::Relaxed) {
                                    tracing::warn!(peer = %addr, error = %status.message(), "delivery to peer failed");
                                }
                            }
                        }
                    });
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.next().await.is_some() {}
    });
    Some(tx)
}
