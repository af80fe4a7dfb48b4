//! The sending side: one bounded queue and one sender task per peer address.
//!
//! A slow or unreachable peer must never hold up the node or the other peers. Each peer gets its own task
//! with a queue of [`PEER_QUEUE_FRAMES`]; when it is full, new frames to that peer are dropped and counted
//! (anti-entropy repairs whatever a dropped delta carried). Channels connect lazily and reconnect on their
//! own; HTTP/2 keep-alives detect a connection that a partition black-holed, so it recovers after repair.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

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
/// Consecutive request timeouts after which the channel to a peer is dropped and dialed afresh.
pub const REDIAL_AFTER_TIMEOUTS: u32 = 2;
/// HTTP/2 keep-alive ping interval and timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns a peer's configured [`Endpoint`] into a lazily connecting [`Channel`].
///
/// The default dials TCP. The simulation dials over its simulated network instead, which is why the
/// transport takes this rather than connecting by itself: the endpoint's settings (timeouts, HTTP/2
/// keep-alives) stay the production ones either way.
#[derive(Clone)]
pub struct Dialer {
    connect: Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>,
    redial: bool,
}

impl Dialer {
    /// A dialer connecting with `connect` (for example `Endpoint::connect_with_connector_lazy`).
    pub fn new(connect: impl Fn(Endpoint) -> Channel + Send + Sync + 'static) -> Dialer {
        Dialer {
            connect: Arc::new(connect),
            redial: true,
        }
    }

    /// Whether a peer's channel is dropped and dialed afresh after [`REDIAL_AFTER_TIMEOUTS`] consecutive
    /// request timeouts (on by default). The simulation turns it off, together with keep-alives, to show
    /// what it guards against: requests on a black-holed connection time out forever.
    pub fn redial(mut self, redial: bool) -> Dialer {
        self.redial = redial;
        self
    }
}

impl Default for Dialer {
    /// Plain TCP.
    fn default() -> Dialer {
        Dialer::new(|endpoint| endpoint.connect_lazy())
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

/// Sends messages to peers by address.
pub struct Transport {
    codec: Codec,
    dialer: Dialer,
    peers: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
    /// The peers' sender tasks, awaited by [`Transport::close`].
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Transport {
    /// A transport sealing with `codec` and connecting with `dialer`.
    pub fn new(codec: Codec, dialer: Dialer) -> Transport {
        Transport {
            codec,
            dialer,
            peers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Queue `msg` for the node at `addr`. Returns the sealed frame's size, or `None` if it was dropped
    /// (queue full or bad address).
    pub fn send(&self, addr: &str, msg: &Message) -> Option<usize> {
        let frame = self.codec.seal(msg);
        let len = frame.len();
        if len > MAX_FRAME_BYTES {
            // The core splits what it sends well below the limit; a frame past it would only come back as an
            // opaque HTTP/2 error from the peer, every time it is retried. Say what it was instead.
            tracing::error!(peer = %addr, kind = msg.kind(), bytes = len, "message too large to send: dropped");
            return None;
        }
        let sender = {
            let mut peers = self.peers.lock();
            match peers.get(addr) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => match spawn_peer(addr, &self.dialer) {
                    Some((tx, task)) => {
                        peers.insert(addr.to_string(), tx.clone());
                        let mut tasks = self.tasks.lock();
                        tasks.retain(|t| !t.is_finished());
                        tasks.push(task);
                        tx
                    }
                    None => return None,
                },
            }
        };
        sender.try_send(frame).ok().map(|()| len)
    }

    /// Stop taking messages and let every peer task deliver what its queue still holds, for at most
    /// `grace`: a node shutting down hands its last deltas over rather than leave anti-entropy to find them
    /// (which it cannot if the node never comes back). Deliveries still under way after `grace` are
    /// abandoned.
    pub async fn close(&self, grace: Duration) {
        // Dropping the senders ends each task once its queue is empty.
        self.peers.lock().clear();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "peers did not take every queued message before shutdown");
        }
    }
}

fn spawn_peer(addr: &str, dialer: &Dialer) -> Option<(mpsc::Sender<Vec<u8>>, JoinHandle<()>)> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tracing::warn!(%addr, error = %e, "bad peer address"))
        .ok()?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let dial = {
        let dialer = dialer.clone();
        move || {
            ReplicationClient::new((dialer.connect)(endpoint.clone()))
                .max_decoding_message_size(MAX_FRAME_BYTES)
                .max_encoding_message_size(MAX_FRAME_BYTES)
        }
    };
    let redial = dialer.redial;
    let mut client = dial();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PEER_QUEUE_FRAMES);
    let addr = addr.to_string();
    let task = tokio::spawn(async move {
        // Deliveries are pipelined over the one HTTP/2 connection: waiting for each answer before sending the
        // next would cap a peer at one frame per round trip and let a burst of commits queue up as lag.
        // Order does not matter (every message is a merge or idempotent).
        let mut in_flight = FuturesUnordered::new();
        let failing = Arc::new(AtomicBool::new(false));
        let timeouts = Arc::new(AtomicU32::new(0));
        loop {
            tokio::select! {
                frame = rx.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    let Some(sealed) = frame else { break };
                    // Keep-alives are what notices a connection a partition black-holed. Should they not
                    // (a peer or middlebox that answers pings but nothing else), requests on it would time out
                    // forever: a lazy channel only reconnects once its connection is known to be dead. So a
                    // run of timeouts also discards the channel and dials afresh.
                    if redial && timeouts.load(Ordering::Relaxed) >= REDIAL_AFTER_TIMEOUTS {
                        timeouts.store(0, Ordering::Relaxed);
                        tracing::info!(peer = %addr, "deliveries keep timing out: dialing the peer afresh");
                        client = dial();
                    }
                    let mut client = client.clone();
                    let (addr, failing, timeouts) = (addr.clone(), failing.clone(), timeouts.clone());
                    in_flight.push(async move {
                        match client.deliver(pb::Frame { sealed }).await {
                            Ok(_) => {
                                timeouts.store(0, Ordering::Relaxed);
                                if failing.swap(false, Ordering::Relaxed) {
                                    tracing::info!(peer = %addr, "peer reachable again");
                                }
                            }
                            Err(status) => {
                                // tonic reports its request timeout as `Cancelled`.
                                if status.code() == tonic::Code::Cancelled {
                                    timeouts.fetch_add(1, Ordering::Relaxed);
                                }
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
    Some((tx, task))
}
