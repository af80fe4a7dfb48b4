//! The cluster driver: runs the sans-IO replication [`Core`] on tokio, between the local database and the
//! gRPC transport.
//!
//! One task owns the loop. It feeds the core three things: messages from the gRPC service's inbox, the
//! database's committed changes that the core [broadcasts](Core::broadcasts), and a tick every
//! [`TICK_INTERVAL`]. It carries out the core's effects: messages go to the [`Transport`] (per-peer bounded
//! queues), entries to persist and tombstones to forget go to [`Db::merge`] (which keeps only what is newer),
//! purges to [`Db::purge_tombstones`], the last sync time to its [record](last_sync), events become logs and
//! metrics. The protocol's rules (what to broadcast, when to purge, what to forget, when to record the last
//! sync) are the core's; this driver and the simulation only carry them out.
//!
//! Database work runs in a [`JoinSet`] the driver owns, at most [`MAX_PENDING_WORK`] at a time: while it is
//! full the driver takes no more messages from the inbox, the inbox fills, and the gRPC service holds its
//! senders (each peer has a bounded number of deliveries in flight, so its own queue fills and it drops
//! deltas, which anti-entropy repairs later). A flood costs bounded memory, not a task per delta. Stopping
//! waits for the set to drain.
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
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::crdt::{Entry, Hlc, NodeId};
use crate::db::{Change, Db};
use crate::discovery::Mdns;
use crate::error::Result;
use crate::grpc::{self, Codec, Dialer, ReplicationService, Transport};
use crate::metrics::Direction;
use crate::replication::{Core, CoreConfig, Destination, Effects, LastSync, Message, PeerRecord, TICK_INTERVAL_MS};
use crate::secrets::{MasterKey, TRANSPORT_DOMAIN};

pub mod last_sync;
mod locks;
mod report;

pub use last_sync::LAST_SYNC_FILE;
pub use locks::{Locker, Solo, LOCK_REQUESTS};

/// How often the core is ticked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(TICK_INTERVAL_MS);
/// How long a stopping node waits for its peers to take the messages still queued for them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// While draining, how often another round is started if none has completed.
const DRAIN_RETRY: Duration = Duration::from_secs(1);
/// How often an isolated node says so.
const ISOLATED_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Messages received but not yet handled before the gRPC service pushes back on senders. Small: each may
/// carry up to `max_message_bytes` of entries, and a node that cannot keep up gains nothing by queueing more.
pub const INBOX_MESSAGES: usize = 256;
/// Most database operations (merges of replicated entries, purges, last-sync writes) in flight at once.
/// Enough for the writer's group commit to batch many deltas; at the bound the inbox is not read.
pub const MAX_PENDING_WORK: usize = 64;
/// Same-version conflicts are logged at most this often (they are counted every time).
const CONFLICT_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
    /// The data directory, where the last sync time is kept; `None` for a node without one (benchmarks,
    /// the simulation's nodes over a given store), which then starts as a new node every time.
    pub data_dir: Option<PathBuf>,
    /// How to connect to peers (TCP, or the simulation's network).
    pub dialer: Dialer,
    /// How long a stopping node tries to complete an anti-entropy round before it leaves anyway.
    pub shutdown_drain: Duration,
}

/// A running cluster member.
pub struct Cluster {
    core: Arc<Mutex<Core>>,
    db: Db,
    /// Lock attempts for the driver (see `locks`).
    locks: mpsc::Sender<locks::LockRequest>,
    cluster_id: String,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The gRPC server: stopped last, because a node leaving still needs its peers' answers to drain.
    server: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    synced: watch::Receiver<bool>,
    clock: Arc<Hlc>,
    discovery_deadline: tokio::time::Instant,
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
        // Read before anything is spawned: a corrupt record refuses the start.
        let record_ms = match &opts.data_dir {
            Some(dir) => last_sync::read(dir)?,
            None => None,
        };
        let stats = db.stats();
        let last = LastSync::recorded(record_ms, stats.keys + stats.tombstones > 0);
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
            version: env!("CARGO_PKG_VERSION").to_string(),
            keys: 0,
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
        // `dns:NAME:PORT` peers are resolved into seeds by their own task, started below.
        let (dns_peers, seeds): (Vec<String>, Vec<String>) = opts
            .seeds
            .into_iter()
            .partition(|s| crate::discovery::dns::name_of(s).is_some());
        let mut core = Core::new(opts.core, record, seeds, rand::random(), started);
        core.restore_last_sync(last, started);
        match last {
            LastSync::Unknown => tracing::warn!(
                "no record of a last sync, but the node holds data: rejoining pull-first (peers decide about \
                 entries older than the tombstone TTL)"
            ),
            _ if core.pull_first() => {
                tracing::warn!("last sync is older than the tombstone TTL: rejoining pull-first")
            }
            _ => {}
        }
        let core = Arc::new(Mutex::new(core));
        let (synced_tx, synced) = watch::channel(false);
        let (locks, lock_requests) = mpsc::channel(LOCK_REQUESTS);
        let driver = Driver {
            db: db.clone(),
            pending_locks: locks::PendingLocks::default(),
            core: core.clone(),
            transport,
            synced: synced_tx,
            data_dir: opts.data_dir,
            work: JoinSet::new(),
            conflicts_logged: None,
            drain_since_ms: AtomicU64::new(u64::MAX),
            drained: AtomicBool::new(false),
            shutdown_drain: opts.shutdown_drain,
        };
        let events = driver.db.subscribe();
        let deadline = tokio::time::Instant::now() + opts.discovery_window;
        let task = tokio::spawn(driver.run(inbox, lock_requests, events, stop_rx, deadline));
        let mut tasks = vec![task];
        tasks.extend(crate::discovery::dns::spawn(dns_peers, core.clone(), stop.subscribe()));
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
            db,
            locks,
            cluster_id,
            stop,
            tasks: Mutex::new(tasks),
            server: Mutex::new(Some((server_stop_tx, server))),
            synced,
            clock,
            discovery_deadline: deadline,
        })
    }

    /// Whether this node is isolated: past its discovery window, it has seeds but reaches none of them and
    /// knows no live member (see [`Core::isolated`]).
    pub fn isolated(&self) -> bool {
        tokio::time::Instant::now() >= self.discovery_deadline && self.core.lock().isolated()
    }

    /// The cluster id (derived from the cluster key).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Whether this node rejoined pull-first (its last sync is older than the tombstone TTL, or unknown)
    /// and has not completed a round since.
    pub fn pull_first(&self) -> bool {
        self.core.lock().pull_first()
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
    /// Lock attempts whose answers wait for the core's decision.
    pending_locks: locks::PendingLocks,
    core: Arc<Mutex<Core>>,
    transport: Arc<Transport>,
    synced: watch::Sender<bool>,
    data_dir: Option<PathBuf>,
    /// Database work in flight (at most [`MAX_PENDING_WORK`]); drained before the driver ends.
    work: JoinSet<()>,
    /// When a same-version conflict was last logged, and how many were counted since.
    conflicts_logged: Option<(tokio::time::Instant, usize)>,
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
        mut self,
        mut inbox: mpsc::Receiver<(NodeId, Message)>,
        mut lock_requests: mpsc::Receiver<locks::LockRequest>,
        mut events: broadcast::Receiver<Arc<Change>>,
        mut stop: watch::Receiver<bool>,
        discovery_deadline: tokio::time::Instant,
    ) {
        let mut tick = tokio::time::interval(TICK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set when told to stop: leave once drained, or at this deadline.
        let mut draining: Option<tokio::time::Instant> = None;
        let mut drain_round_at = tokio::time::Instant::now();
        // While isolated (see `Cluster::isolated`): when it was last said.
        let mut isolated_said: Option<tokio::time::Instant> = None;
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
            let room = self.work.len() < MAX_PENDING_WORK;
            tokio::select! {
                _ = stop.changed(), if draining.is_none() => {
                    // The API takes no more writes. Broadcast the last local commits, then make sure some
                    // peer holds everything this node holds: an anti-entropy round started from now on that
                    // completes proves it (deltas alone may have been lost to a partition).
                    self.broadcast_local(None, &mut events).await;
                    // Only members that look alive are asked: waiting for suspect or dead ones would hold
                    // up every stop of the last node of a cluster for nothing. A retry on the ticks below
                    // picks another alive member if a round gets no answer.
                    self.drain_since_ms.store(self.now_ms(), Ordering::Release);
                    if self.shutdown_drain.is_zero() || !self.any_alive() {
                        return self.leave().await;
                    }
                    tracing::debug!("stopping: handing this node's writes to a peer before leaving");
                    self.start_drain_round().await;
                    drain_round_at = tokio::time::Instant::now();
                    draining = Some(drain_round_at + self.shutdown_drain);
                }
                // Not read while the work set is full: the inbox fills and the gRPC service holds the senders.
                Some((from, msg)) = inbox.recv(), if room => {
                    if let Message::Delta { entries } = &msg {
                        self.db.metrics().deltas_received(&from.to_string(), entries.len() as u64);
                    }
                    let fx = self.db.with_state(|state| self.core.lock().on_message(self.now_ms(), from, msg, state));
                    self.carry_out(fx).await;
                }
                Some(request) = lock_requests.recv(), if room && draining.is_none() => {
                    self.start_lock(request).await;
                }
                Some(done) = self.work.join_next(), if !self.work.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a replication database task failed");
                    }
                }
                change = events.recv() => match change {
                    Ok(entry) => self.broadcast_local(Some(entry), &mut events).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "replication fell behind local writes; anti-entropy will repair");
                    }
                    Err(broadcast::error::RecvError::Closed) => return self.finish_work().await,
                },
                _ = tick.tick() => {
                    let fx = self.db.with_state(|state| self.core.lock().on_tick(self.now_ms(), state));
                    self.carry_out(fx).await;
                    // While draining, a round that timed out or went to a peer that cannot answer should
                    // not hold the leave up to the deadline: try again, with whoever is alive.
                    if draining.is_some() && drain_round_at.elapsed() >= DRAIN_RETRY {
                        drain_round_at = tokio::time::Instant::now();
                        self.start_drain_round().await;
                    }
                    self.report_peers();
                    if tokio::time::Instant::now() >= discovery_deadline {
                        self.say_isolation(&mut isolated_said);
                    }
                    self.apply_fence();
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

    /// Log, once per [`ISOLATED_LOG_INTERVAL`], that no seed is reachable, and when that ends.
    fn say_isolation(&self, said: &mut Option<tokio::time::Instant>) {
        let core = self.core.lock();
        if !core.isolated() {
            if said.take().is_some() {
                tracing::info!("reached the cluster: no longer isolated");
            }
            return;
        }
        if said.is_some_and(|at| at.elapsed() < ISOLATED_LOG_INTERVAL) {
            return;
        }
        *said = Some(tokio::time::Instant::now());
        let seeds: Vec<&str> = core.seeds().collect();
        tracing::warn!(
            seeds = %seeds.join(","),
            "isolated: no seed peer answers and no member is known, so this node serves on its own; check the \
             peer addresses, the network and that the nodes share one cluster key (retrying)"
        );
    }

    /// Whether any member looks alive.
    fn any_alive(&self) -> bool {
        self.core.lock().membership().alive().next().is_some()
    }

    /// Start an anti-entropy round with an alive peer for the drain, if there is one.
    async fn start_drain_round(&mut self) {
        let now = self.now_ms();
        let mut fx = Effects::default();
        self.db
            .with_state(|state| self.core.lock().start_anti_entropy(now, state, &mut fx));
        self.carry_out(fx).await;
    }

    /// Say goodbye (a last gossip saying so), finish the database work in flight, and give the peers a
    /// bounded moment to take what is still queued for them.
    async fn leave(mut self) {
        let fx = self.core.lock().leave(self.now_ms());
        self.carry_out(fx).await;
        let transport = self.transport.clone();
        self.finish_work().await;
        transport.close(SHUTDOWN_GRACE).await;
    }

    /// Wait for every database task in flight.
    async fn finish_work(mut self) {
        while let Some(done) = self.work.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a replication database task failed");
            }
        }
    }

    /// Run database work in the driver's set, first waiting for room if it is full.
    async fn spawn_work(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        while self.work.len() >= MAX_PENDING_WORK {
            if let Some(Err(e)) = self.work.join_next().await {
                tracing::error!(error = %e, "a replication database task failed");
            }
        }
        self.work.spawn(work);
    }

    /// Broadcast what this node wrote (`first`, then everything already committed, coalesced into one
    /// delta per peer), as far as the core [broadcasts](Core::broadcasts) it.
    ///
    /// An event past the stream's value budget carries no value and is resolved against the map (one read
    /// lock for the batch). Such a change that a newer one replaced meanwhile resolves to nothing and is not
    /// sent, and nothing is lost: if the newer change is this node's, its own event (later in the stream)
    /// sends it; if it came from a peer, it supersedes ours everywhere, and that peer sends it. If the
    /// driver lags (misses events), anti-entropy repairs what the deltas did not carry.
    async fn broadcast_local(&mut self, first: Option<Arc<Change>>, events: &mut broadcast::Receiver<Arc<Change>>) {
        let now = self.now_ms();
        // This node's own writes, and what came in through its import (pushed whoever wrote it).
        let (mut changes, mut imported) = (Vec::new(), Vec::new());
        {
            let core = self.core.lock();
            for c in first.into_iter().chain(std::iter::from_fn(|| events.try_recv().ok())) {
                if core.broadcasts(now, c.version, c.deleted) {
                    changes.push(c);
                } else if c.imported && core.forwards_import(now, c.version, c.deleted) {
                    imported.push(c);
                }
            }
        }
        let batch: Vec<Entry> = self.db.resolve_broadcast(changes.iter().map(|c| &**c));
        if !batch.is_empty() {
            let fx = self.core.lock().on_local_commit(now, &batch);
            self.carry_out(fx).await;
        }
        let batch: Vec<Entry> = self.db.resolve_broadcast(imported.iter().map(|c| &**c));
        if !batch.is_empty() {
            let fx = self.core.lock().on_import(now, &batch);
            self.carry_out(fx).await;
        }
    }

    async fn carry_out(&mut self, fx: Effects) {
        let Effects {
            sends,
            after_persist,
            persist,
            forget,
            purge_below,
            persist_last_sync,
            events,
        } = fx;
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
        if !forget.is_empty() {
            tracing::info!(
                entries = forget.len(),
                "pull-first rejoin: dropping old entries the peers no longer hold"
            );
        }
        // Lock answers and votes go out once the records of the same effects are stored.
        let mut answers = self.pending_locks.decided(&events);
        let mut votes: Vec<(String, Message)> = {
            let core = self.core.lock();
            after_persist
                .into_iter()
                .filter_map(|(to, msg)| match to {
                    Destination::Node(id) => Some((core.address_of(id)?.to_string(), msg)),
                    Destination::Addr(addr) => Some((addr, msg)),
                })
                .collect()
        };
        if persist.is_empty() {
            for (addr, msg) in votes.drain(..) {
                self.transport.send(&addr, &msg);
            }
        }
        if persist.is_empty() {
            locks::answer(std::mem::take(&mut answers), true);
        }
        if !persist.is_empty() || !forget.is_empty() || purge_below.is_some() {
            // One task, in the core's order: replicated entries, then the same-version tombstones that
            // forget entries, then the purge that removes those tombstones (and every expired one).
            let db = self.db.clone();
            let transport = self.transport.clone();
            self.spawn_work(async move {
                if !persist.is_empty() {
                    let stored = db.merge(persist).await;
                    if let Err(e) = &stored {
                        tracing::warn!(error = %e, "could not apply replicated entries; anti-entropy will retry");
                    }
                    locks::answer(answers, stored.is_ok());
                    if stored.is_ok() {
                        for (addr, msg) in votes {
                            transport.send(&addr, &msg);
                        }
                    }
                }
                if !forget.is_empty() {
                    if let Err(e) = db.merge(forget).await {
                        tracing::warn!(error = %e, "could not drop stale entries; the next round retries");
                        return;
                    }
                }
                if let Some(horizon) = purge_below {
                    match db.purge_tombstones(horizon).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(purged = n, "purged expired tombstones"),
                        Err(e) => tracing::warn!(error = %e, "tombstone purge failed"),
                    }
                }
            })
            .await;
        }
        if let (Some(time_ms), Some(dir)) = (persist_last_sync, self.data_dir.clone()) {
            self.spawn_work(async move {
                let written = tokio::task::spawn_blocking(move || last_sync::write(&dir, time_ms)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not record the last sync time"),
                    Err(e) => tracing::warn!(error = %e, "could not record the last sync time"),
                }
            })
            .await;
        }
        for event in events {
            self.report(event);
        }
    }
}

/// The port of a `host:port` address (0 if it has none).
fn listener_port(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0)
}
