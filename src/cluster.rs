//! The cluster driver: runs the sans-IO replication [`Core`] on tokio, between the local database and the
//! gRPC transport.
//!
//! One task owns the loop. It feeds the core three things: messages from the gRPC service's inbox, the
//! database's committed changes that this node wrote itself (`version.node == me`: replicated entries are
//! never re-broadcast, so a delta travels one hop), and a tick every [`TICK_INTERVAL`]. It carries out the
//! core's effects: messages go to the [`Transport`] (per-peer bounded queues), entries to persist go to
//! [`Db::merge`] (which keeps only what is newer), events become logs and metrics.
//!
//! Lock order: the database's state lock (read) is taken before the core's lock, never the other way round;
//! the HTTP API only takes the core's lock (for the node list).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::crdt::{Entry, Hlc, NodeId};
use crate::db::{Change, Db};
use crate::discovery::Mdns;
use crate::error::Result;
use crate::grpc::{self, Codec, Dialer, ReplicationService, Transport};
use crate::metrics::{Direction, PeerCounts, RoundResult};
use crate::replication::{Core, CoreConfig, CoreEvent, Destination, Effects, Message, PeerRecord, Status};
use crate::secrets::{MasterKey, TRANSPORT_DOMAIN};

/// How often the core is ticked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a stopping node waits for its peers to take the messages still queued for them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// While draining, how often another round is started if none has completed.
const DRAIN_RETRY: Duration = Duration::from_secs(1);
/// Messages received but not yet handled before the gRPC service pushes back on senders.
const INBOX_MESSAGES: usize = 4096;
/// File in the data directory holding the time (ms) of the last completed anti-entropy round.
pub const LAST_SYNC_FILE: &str = "last_sync";
/// The last sync time is written at most this often.
const LAST_SYNC_WRITE_INTERVAL_MS: u64 = 60_000;
/// Bounds of the interval between two tombstone purges (a tenth of the TTL within these).
const MIN_PURGE_INTERVAL: Duration = Duration::from_secs(1);
const MAX_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// What a cluster member needs to know about itself.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Protocol tunables.
    pub core: CoreConfig,
    /// Seed addresses (`host:port` of peers' gRPC endpoints).
    pub seeds: Vec<String>,
    /// The cluster key: seals all traffic and names the cluster.
    pub key: MasterKey,
    /// The address peers should use to reach this node's gRPC endpoint.
    pub advertise_grpc: String,
    /// This node's HTTP address (gossiped for operators and the UI).
    pub advertise_http: String,
    /// How long to look for peers before a node without any considers itself the first of its cluster.
    pub discovery_window: Duration,
    /// Announce and discover by mDNS.
    pub mdns: bool,
    /// The data directory, where the last sync time is kept; `None` for a node without one (the
    /// simulation's in-memory nodes), which then always restarts as if it had synced recently.
    pub data_dir: Option<PathBuf>,
    /// How to connect to peers (TCP, or the simulation's network).
    pub dialer: Dialer,
    /// How long a stopping node tries to complete an anti-entropy round before it leaves anyway.
    pub shutdown_drain: Duration,
}

/// A running cluster member.
pub struct Cluster {
    core: Arc<Mutex<Core>>,
    cluster_id: String,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The gRPC server: stopped last, because a node leaving still needs its peers' answers to drain.
    server: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    synced: watch::Receiver<bool>,
    clock: Arc<Hlc>,
}

impl Cluster {
    /// Start serving replication on `listener` and run the core.
    pub async fn start(db: Db, opts: ClusterOptions, listener: TcpListener) -> Result<Cluster> {
        Cluster::start_on(db, opts, tokio_stream::wrappers::TcpListenerStream::new(listener)).await
    }

    /// Start serving replication on the connections `incoming` yields and run the core. The core reads time
    /// from the database's clock, so a node on simulated time is entirely on simulated time.
    pub async fn start_on<I, IO, IE>(db: Db, opts: ClusterOptions, incoming: I) -> Result<Cluster>
    where
        I: Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let me = db.node_id();
        let clock = db.hlc().clone();
        let cluster_id = opts.key.cluster_id();
        let codec = Codec::new(opts.key.sealer(TRANSPORT_DOMAIN), cluster_id.clone(), me);
        let transport = Arc::new(Transport::new(codec.clone(), opts.dialer.clone()));
        let (inbox_tx, inbox) = mpsc::channel(INBOX_MESSAGES);
        let (stop, stop_rx) = watch::channel(false);
        let service = ReplicationService::new(codec, inbox_tx, db.metrics().clone());
        let (server_stop_tx, mut server_stop) = watch::channel(false);
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = grpc::serve(incoming, service, shutdown).await {
                tracing::error!(error = %e, "replication server stopped");
            }
        });
        let started = clock.time_ms();
        let record = PeerRecord {
            id: me,
            grpc_addr: opts.advertise_grpc.clone(),
            http_addr: opts.advertise_http.clone(),
            incarnation: started,
            heartbeat: 0,
            left: false,
        };
        let mdns = if opts.mdns {
            match Mdns::start(me, &cluster_id, listener_port(&opts.advertise_grpc)) {
                Ok((mdns, found)) => Some((mdns, found)),
                Err(e) => {
                    tracing::warn!(error = %e, "mDNS discovery unavailable; relying on seed peers");
                    None
                }
            }
        } else {
            None
        };
        let purge_interval =
            Duration::from_millis(opts.core.tombstone_ttl_ms / 10).clamp(MIN_PURGE_INTERVAL, MAX_PURGE_INTERVAL);
        let mut core = Core::new(opts.core, record, opts.seeds, rand::random(), started);
        let last_sync = opts
            .data_dir
            .as_ref()
            .and_then(|dir| std::fs::read_to_string(dir.join(LAST_SYNC_FILE)).ok())
            .and_then(|t| t.trim().parse().ok());
        core.restore_last_sync(last_sync, started);
        if core.pull_first() {
            tracing::warn!("last sync is older than the tombstone TTL: rejoining pull-first");
        }
        let core = Arc::new(Mutex::new(core));
        let (synced_tx, synced) = watch::channel(false);
        let driver = Driver {
            db,
            core: core.clone(),
            transport,
            synced: synced_tx,
            data_dir: opts.data_dir,
            last_sync_written: AtomicU64::new(0),
            purge_interval,
            drain_since_ms: AtomicU64::new(u64::MAX),
            drained: AtomicBool::new(false),
            shutdown_drain: opts.shutdown_drain,
        };
        let events = driver.db.subscribe();
        let deadline = tokio::time::Instant::now() + opts.discovery_window;
        let task = tokio::spawn(driver.run(inbox, events, stop_rx, deadline));
        let mut tasks = vec![task];
        if let Some((mdns, mut found)) = mdns {
            let core = core.clone();
            let mut stop = stop.subscribe();
            tasks.push(tokio::spawn(async move {
                let _mdns = mdns; // announced until this task ends
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        addr = found.recv() => match addr {
                            Some(addr) => core.lock().add_seeds([addr]),
                            None => return,
                        },
                    }
                }
            }));
        }
        tracing::info!(node = %me, cluster = %cluster_id, "cluster member started");
        Ok(Cluster {
            core,
            cluster_id,
            stop,
            tasks: Mutex::new(tasks),
            server: Mutex::new(Some((server_stop_tx, server))),
            synced,
            clock,
        })
    }

    /// The cluster id (derived from the cluster key).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Whether this node has completed an anti-entropy round (or had nobody to sync with).
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Run `f` on the replication core and the local time (ms): the node list reads membership and clocks.
    pub fn with_core<T>(&self, f: impl FnOnce(&Core, u64) -> T) -> T {
        let now_ms = self.clock.time_ms();
        f(&self.core.lock(), now_ms)
    }

    /// Leave the cluster and stop the tasks: the driver first (it drains, then gossips that it leaves; see
    /// `Driver::run`), the gRPC server last.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
        let server = self.server.lock().take();
        if let Some((stop, task)) = server {
            stop.send_replace(true);
            let _ = task.await;
        }
    }
}

struct Driver {
    db: Db,
    core: Arc<Mutex<Core>>,
    transport: Arc<Transport>,
    synced: watch::Sender<bool>,
    data_dir: Option<PathBuf>,
    last_sync_written: AtomicU64,
    purge_interval: Duration,
    /// While leaving: when the drain began (ms, the core's clock), and whether a round started since then
    /// has completed. `u64::MAX` when not leaving.
    drain_since_ms: AtomicU64,
    drained: AtomicBool,
    shutdown_drain: Duration,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.db.hlc().time_ms()
    }

    async fn run(
        self,
        mut inbox: mpsc::Receiver<(NodeId, Message)>,
        mut events: broadcast::Receiver<Arc<Change>>,
        mut stop: watch::Receiver<bool>,
        discovery_deadline: tokio::time::Instant,
    ) {
        let mut tick = tokio::time::interval(TICK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(self.purge_interval);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set when told to stop: leave once drained, or at this deadline.
        let mut draining: Option<tokio::time::Instant> = None;
        let mut drain_round_at = tokio::time::Instant::now();
        loop {
            if let Some(deadline) = draining {
                let drained = self.drained.load(Ordering::Acquire);
                if drained || tokio::time::Instant::now() >= deadline || !self.any_alive() {
                    if !drained {
                        tracing::warn!(
                            limit = ?self.shutdown_drain,
                            "leaving without a completed anti-entropy round: writes no peer has seen may be \
                             lost if this node does not come back"
                        );
                    }
                    return self.leave().await;
                }
            }
            tokio::select! {
                _ = stop.changed(), if draining.is_none() => {
                    // The API takes no more writes. Broadcast the last local commits, then make sure some
                    // peer holds everything this node holds: an anti-entropy round started from now on that
                    // completes proves it (deltas alone may have been lost to a partition).
                    self.broadcast_local(None, &mut events);
                    // Only members that look alive are asked: waiting for suspect or dead ones would hold
                    // up every stop of the last node of a cluster for nothing. A retry on the ticks below
                    // picks another alive member if a round gets no answer.
                    self.drain_since_ms.store(self.now_ms(), Ordering::Release);
                    if self.shutdown_drain.is_zero() || !self.any_alive() {
                        return self.leave().await;
                    }
                    tracing::debug!("stopping: handing this node's writes to a peer before leaving");
                    self.start_drain_round();
                    drain_round_at = tokio::time::Instant::now();
                    draining = Some(drain_round_at + self.shutdown_drain);
                }
                Some((from, msg)) = inbox.recv() => {
                    if let Message::Delta { entries } = &msg {
                        self.db.metrics().deltas_received(&from.to_string(), entries.len() as u64);
                    }
                    let fx = self.db.with_state(|state| self.core.lock().on_message(self.now_ms(), from, msg, state));
                    self.carry_out(fx);
                }
                change = events.recv() => match change {
                    Ok(entry) => self.broadcast_local(Some(entry), &mut events),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "replication fell behind local writes; anti-entropy will repair");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = purge.tick() => self.purge(),
                _ = tick.tick() => {
                    let fx = self.db.with_state(|state| self.core.lock().on_tick(self.now_ms(), state));
                    self.carry_out(fx);
                    // While draining, a round that timed out or went to a peer that cannot answer should
                    // not hold the leave up to the deadline: try again, with whoever is alive.
                    if draining.is_some() && drain_round_at.elapsed() >= DRAIN_RETRY {
                        drain_round_at = tokio::time::Instant::now();
                        self.start_drain_round();
                    }
                    self.report_peers();
                    self.apply_fence();
                    self.remember_sync();
                    // Nobody found within the discovery window: this is the first node of its cluster, and
                    // there is nothing to catch up with.
                    if !*self.synced.borrow()
                        && tokio::time::Instant::now() >= discovery_deadline
                        && self.core.lock().membership().members().next().is_none()
                    {
                        tracing::info!("no peers found: starting as the first node of the cluster");
                        self.synced.send_replace(true);
                    }
                }
            }
        }
    }

    /// Whether any member looks alive.
    fn any_alive(&self) -> bool {
        self.core.lock().membership().alive().next().is_some()
    }

    /// Start an anti-entropy round with an alive peer for the drain, if there is one.
    fn start_drain_round(&self) {
        let now = self.now_ms();
        let mut fx = Effects::default();
        self.db
            .with_state(|state| self.core.lock().start_anti_entropy(now, state, &mut fx));
        self.carry_out(fx);
    }

    /// Say goodbye (a last gossip saying so) and give the peers a bounded moment to take what is still
    /// queued for them.
    async fn leave(&self) {
        let fx = self.core.lock().leave(self.now_ms());
        self.carry_out(fx);
        self.transport.close(SHUTDOWN_GRACE).await;
    }

    /// Broadcast what this node wrote (`first`, then everything already committed, coalesced into one
    /// delta per peer), except tombstones older than the purge horizon: those are the same-version
    /// tombstones of a pull-first `forget`, local cleanup that must not delete anything elsewhere.
    ///
    /// An event past the stream's value budget carries no value and is resolved against the map (one read
    /// lock for the batch). Such a change that a newer one replaced meanwhile resolves to nothing and is not
    /// sent, and nothing is lost: if the newer change is this node's, its own event (later in the stream)
    /// sends it; if it came from a peer, it supersedes ours everywhere, and that peer sends it. If the
    /// driver lags (misses events), anti-entropy repairs what the deltas did not carry.
    fn broadcast_local(&self, first: Option<Arc<Change>>, events: &mut broadcast::Receiver<Arc<Change>>) {
        let me = self.db.node_id();
        let horizon = self.core.lock().purge_horizon(self.now_ms());
        let changes: Vec<Arc<Change>> = first
            .into_iter()
            .chain(std::iter::from_fn(|| events.try_recv().ok()))
            .filter(|c| c.version.node == me && !(c.deleted && c.version.hlc < horizon))
            .collect();
        let batch: Vec<Entry> = self.db.resolve_all(changes.iter().map(|c| &**c));
        if !batch.is_empty() {
            let fx = self.core.lock().on_local_commit(&batch);
            self.carry_out(fx);
        }
    }

    fn carry_out(&self, fx: Effects) {
        let Effects {
            sends,
            persist,
            forget,
            events,
        } = fx;
        if !forget.is_empty() {
            // Pull-first rejoin: a tombstone of the *same* version supersedes the stale entry (equal versions
            // order tombstones last); it is older than the purge horizon, so the purge right after removes
            // it for good, and peers drop it as garbage if they ever see it.
            tracing::info!(
                entries = forget.len(),
                "pull-first rejoin: dropping old entries the peers no longer hold"
            );
            let tombstones: Vec<Entry> = forget.into_iter().map(|e| Entry::tombstone(e.key, e.version)).collect();
            let horizon = self.core.lock().purge_horizon(self.now_ms());
            let db = self.db.clone();
            tokio::spawn(async move {
                let result = async {
                    db.merge(tombstones).await?;
                    db.purge_tombstones(horizon).await
                };
                if let Err(e) = result.await {
                    tracing::warn!(error = %e, "could not drop stale entries; the next round retries");
                }
            });
        }
        if !sends.is_empty() {
            let core = self.core.lock();
            for (to, msg) in sends {
                let (addr, peer) = match &to {
                    Destination::Node(id) => (core.address_of(*id).map(str::to_string), Some(*id)),
                    Destination::Addr(addr) => (Some(addr.clone()), None),
                };
                let Some(addr) = addr else { continue };
                let sent = self.transport.send(&addr, &msg);
                let peer_label = peer.map(|p| p.to_string()).unwrap_or_else(|| "seed".into());
                match (&msg, sent) {
                    (Message::Delta { entries }, Some(_)) => {
                        self.db.metrics().deltas_sent(&peer_label, entries.len() as u64)
                    }
                    (Message::Delta { entries }, None) => {
                        self.db.metrics().deltas_dropped(&peer_label, entries.len() as u64)
                    }
                    (m, Some(bytes)) if m.kind().starts_with("ae_") => {
                        self.db.metrics().anti_entropy_bytes(Direction::Sent, bytes as u64)
                    }
                    _ => {}
                }
            }
        }
        if !persist.is_empty() {
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.merge(persist).await {
                    tracing::warn!(error = %e, "could not apply replicated entries; anti-entropy will retry");
                }
            });
        }
        for event in events {
            match event {
                CoreEvent::Peer(change) => {
                    tracing::info!(peer = %change.id, status = change.status.as_str(), "peer status changed")
                }
                CoreEvent::ClockDriftRejected { from, entries } => {
                    tracing::warn!(peer = %from, entries, "entries stamped too far in the future held back (clock skew)");
                    for _ in 0..entries {
                        self.db.metrics().clock_drift_rejection();
                    }
                }
                CoreEvent::ClockFenced { offset_ms } => tracing::error!(
                    offset_ms,
                    "this node's clock is off the cluster's by more than max_clock_drift allows: refusing \
                     writes until it is back (reads go on, marked possibly stale); fix the clock (NTP)"
                ),
                CoreEvent::ClockUnfenced { offset_ms } => {
                    tracing::info!(
                        offset_ms,
                        "this node's clock is back within bounds: taking writes again"
                    )
                }
                CoreEvent::AntiEntropyDone {
                    peer,
                    repaired,
                    in_sync,
                    started_ms,
                } => {
                    if started_ms >= self.drain_since_ms.load(Ordering::Acquire) {
                        self.drained.store(true, Ordering::Release);
                    }
                    tracing::debug!(%peer, repaired, in_sync, "anti-entropy round done");
                    self.db.metrics().anti_entropy_round(RoundResult::Ok);
                    self.db.metrics().anti_entropy_repaired(repaired as u64);
                    self.synced.send_replace(true);
                }
                CoreEvent::AntiEntropyTimedOut { peer } => {
                    tracing::debug!(%peer, "anti-entropy round timed out");
                    self.db.metrics().anti_entropy_round(RoundResult::Failed);
                }
            }
        }
    }

    /// Persist the time of the last completed anti-entropy round (at most once a minute): after a restart it
    /// decides whether the node must rejoin pull-first.
    fn remember_sync(&self) {
        let Some(synced) = self.core.lock().last_sync_ms() else {
            return;
        };
        let written = self.last_sync_written.load(std::sync::atomic::Ordering::Relaxed);
        if synced <= written || synced.saturating_sub(written) < LAST_SYNC_WRITE_INTERVAL_MS && written != 0 {
            return;
        }
        self.last_sync_written
            .store(synced, std::sync::atomic::Ordering::Relaxed);
        let Some(dir) = &self.data_dir else { return };
        let now = synced;
        let path = dir.join(LAST_SYNC_FILE);
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, now.to_string()).and_then(|_| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::warn!(error = %e, "could not record the last sync time");
            }
        });
    }

    /// Purge tombstones older than the TTL.
    fn purge(&self) {
        let horizon = self.core.lock().purge_horizon(self.now_ms());
        let db = self.db.clone();
        tokio::spawn(async move {
            match db.purge_tombstones(horizon).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged expired tombstones"),
                Err(e) => tracing::warn!(error = %e, "tombstone purge failed"),
            }
        });
    }

    /// Mirror the core's fence into the clock (which refuses to stamp local writes while fenced) and the
    /// metrics.
    fn apply_fence(&self) {
        let view = self.core.lock().clock_view();
        self.db.hlc().set_fence(view.fenced);
        let peers = view.members.iter().map(|(id, o)| (id.to_string(), *o)).collect();
        self.db
            .metrics()
            .set_clock(view.fenced.is_some(), view.offset_ms, peers);
    }

    fn report_peers(&self) {
        let core = self.core.lock();
        let mut counts = PeerCounts {
            alive: 0,
            suspect: 0,
            dead: 0,
        };
        for m in core.membership().members() {
            match m.status {
                Status::Alive => counts.alive += 1,
                Status::Suspect => counts.suspect += 1,
                Status::Dead | Status::Left => counts.dead += 1,
            }
        }
        self.db.metrics().set_peers(counts);
    }
}

/// The port of a `host:port` address (0 if it has none).
fn listener_port(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0)
}
