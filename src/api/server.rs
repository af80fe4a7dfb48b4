//! The HTTP server: the accept loop and per-connection limits around the router.
//!
//! `axum::serve` keeps every connection as long as the client likes, so idle sockets, a request head
//! trickled a byte at a time (slowloris) or a body that never completes hold a file descriptor each until
//! the process runs out and stops answering anyone. Here each connection is served by hyper-util's
//! auto (HTTP/1 and HTTP/2) builder under a watchdog that knows which phase the connection is in:
//!
//! - **idle** (no request in progress, nothing of the next one received): closed after `idle_timeout`;
//! - **head** (bytes of a request head received, the head not yet complete): closed `header_timeout` after
//!   the first of those bytes;
//! - **busy** (a request is being handled or its response streamed, watch streams included): left alone;
//!   its body must arrive within `body_timeout` of the head (`TimedBody`), else reading it fails.
//!
//! The phases come from two observation points: the connection's reads (`Watched`) and the service,
//! which counts requests in progress from the head until the response body is dropped (`Guarded`). A
//! semaphore caps the connections, set below the open-files limit so that it leaves descriptors for SQLite
//! and replication. At the cap, a new connection takes the place of the connection idle the longest (no
//! request in progress, so closing it loses nothing; counted in `cave_http_connections_evicted`), as
//! nginx reuses keep-alive connections: otherwise enough idle sockets would lock every new client out, a
//! health check included, until their idle timeout. Only when every connection is busy is the new one
//! accepted and closed at once (counted in `cave_http_connections_refused`), so that the listener's
//! backlog keeps moving.
//!
//! With TLS ([`super::tls`]), each accepted connection first completes its handshake, within `header_timeout`
//! of the accept (counted as a `handshake` timeout otherwise), so a client that never finishes it holds its
//! descriptor no longer than one that trickles a head; the phases above then run on the decrypted stream.
//! Until then a connection is not registered for eviction, as one in a request head is not. SIGHUP, read by
//! the accept loop, makes it re-read the certificate and key ([`Tls::reload`]) without touching any
//! connection.
//!
//! Shutdown: the accept loop stops, every connection is told to finish gracefully (HTTP/1 closes once its
//! response is written, HTTP/2 sends GOAWAY), and [`serve`] returns once every connection task has ended.
//! Watch streams end on their own when the database begins shutting down.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::serve::Listener;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::tls::Tls;
use crate::metrics::{ConnectionTimeout, Metrics};

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest time from the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Longest time a connection may stay without a request in progress.
    pub idle_timeout: Duration,
    /// Longest time from a request head to the end of its body.
    pub body_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` sets, with `fd_limit` (the open-files limit) for a derived connection cap.
    pub fn of(config: &crate::config::Config, fd_limit: Option<u64>) -> Limits {
        Limits {
            header_timeout: config.http_header_timeout,
            idle_timeout: config.http_idle_timeout,
            body_timeout: config.http_body_timeout,
            max_connections: config.max_connections(fd_limit),
        }
    }
}

/// Raise the soft limit on open files to the hard limit (many clients need many descriptors) and return
/// the resulting soft limit, `None` if it is unlimited.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%err, "cannot raise the open-files limit to the hard limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Serve `router` on `listener` within `limits`, over HTTPS if `tls` is given, until `shutdown` resolves,
/// then finish gracefully. With `tls`, SIGHUP reloads its certificate and key.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    mut tls: Option<Tls>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
{
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        body_timeout = ?limits.body_timeout,
        "HTTP limits"
    );
    let permits = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut hangups = tls.as_mut().and_then(Tls::take_hangups);
    if let Some(tls) = &tls {
        tls.report(&metrics);
    }
    let acceptor = tls.as_ref().map(Tls::acceptor);
    loop {
        let (io, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(()) = hangup(&mut hangups) => {
                if let Some(tls) = &tls {
                    tracing::info!(signal = "SIGHUP", "reloading the TLS certificate and key");
                    tls.reload(&metrics);
                }
                continue;
            }
            accepted = listener.accept() => accepted,

        };
        // Reap finished connections so that the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if registry.evict_longest_idle() => {
                metrics.http_connection_evicted();
                // The evicted connection has nothing in progress: it closes at once and gives its permit back.
                tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            metrics.http_connection_refused();
            tracing::debug!(max = limits.max_connections, "connection refused: too many open");
            drop(io);
            continue;
        };
        let connection = Connection {
            router: router.clone(),
            limits,
            tls: acceptor.clone(),
            metrics: metrics.clone(),
            stop: stop_rx.clone(),
            registry: registry.clone(),
        };
        connections.spawn(async move {
            connection.run(io, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The next SIGHUP; never, without a handler (no TLS to reload).
async fn hangup(hangups: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    router: Router,
    limits: Limits,
    /// Handshakes the connection first, when the API speaks HTTPS.
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    registry: Arc<Registry>,
}

impl Connection {
    /// Serve `io`; its requests carry `ConnectInfo(peer)` (the audit trail records the client's address).
    async fn run<IO, A>(mut self, io: IO, peer: A)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        A: Clone + Send + Sync + 'static,
    {
        let _open = self.metrics.http_connection();
        let Some(acceptor) = self.tls.take() else {
            return self.serve_http(io, peer).await;
        };
        let handshake = tokio::time::timeout(self.limits.header_timeout, acceptor.accept(io));
        let stream = tokio::select! {
            accepted = handshake => match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    // Plain HTTP to this port ends here, without a byte of HTTP sent back.
                    self.metrics.tls_handshake_failed();
                    tracing::debug!(%err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.metrics.http_connection_timeout(ConnectionTimeout::Handshake);
                    return;
                }
            },
            // Shutting down: a connection still in its handshake has no request to finish.
            _ = self.stop.wait_for(|stop| *stop) => return,
        };
        self.serve_http(stream, peer).await;
    }

    async fn serve_http<IO, A>(mut self, io: IO, peer: A)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        A: Clone + Send + Sync + 'static,
    {
        let activity = Arc::new(Activity::new());
        let _registered = self.registry.register(activity.clone());
        let io = Watched {
            inner: io,
            activity: activity.clone(),
        };
        let (router, body_timeout) = (self.router.clone(), self.limits.body_timeout);
        let service_activity = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            service_activity.request_started();
            let guard = RequestGuard(service_activity.clone());
            let mut request = request.map(|body| Body::new(TimedBody::new(body, body_timeout)));
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer.clone()));
            let router = router.clone();
            async move {
                let Ok(response) = router.oneshot(request).await;
                Ok::<_, Infallible>(response.map(|body| Guarded { body, _guard: guard }))
            }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%err, "HTTP connection ended with an error");
                    }
                    return;
                }
                phase = activity.expired(self.limits) => {
                    // Nothing is in progress in either phase: dropping the connection loses no request.
                    self.metrics.http_connection_timeout(phase);
                    return;
                }
                changed = self.stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                // Chosen to make room at the cap while idle. Gracefully all the same: a request that began
                // meanwhile still gets its answer (HTTP/1 closes after it, HTTP/2 sends GOAWAY).
                () = activity.evict.notified(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What the watchdog of one connection knows: requests in progress, whether bytes arrived since the last
/// one ended, and since when the connection is in its current phase (milliseconds after `epoch`).
struct Activity {
    epoch: Instant,
    in_progress: AtomicUsize,
    head_started: AtomicBool,
    phase_since_ms: AtomicU64,
    /// Set once the connection is chosen for eviction (it is not chosen twice).
    evicted: AtomicBool,
    /// Tells the connection to close, to make room for a new one at the cap.
    evict: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_progress: AtomicUsize::new(0),
            head_started: AtomicBool::new(false),
            phase_since_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived from the client: with no request in progress, they begin the next request's head.
    fn read(&self) {
        if self.in_progress.load(Ordering::Acquire) == 0 && !self.head_started.swap(true, Ordering::AcqRel) {
            self.phase_since_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    fn request_started(&self) {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(false, Ordering::Release);
    }

    fn request_ended(&self) {
        self.phase_since_ms.store(self.now_ms(), Ordering::Release);
        self.in_progress.fetch_sub(1, Ordering::AcqRel);
    }

    /// The current phase and since when it lasts; `None` while a request is in progress.
    fn phase(&self) -> Option<(ConnectionTimeout, u64)> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        let phase = if self.head_started.load(Ordering::Acquire) {
            ConnectionTimeout::Header
        } else {
            ConnectionTimeout::Idle
        };
        Some((phase, self.phase_since_ms.load(Ordering::Acquire)))
    }

    /// Resolves when the connection has stayed idle, or in an incomplete head, longer than allowed.
    ///
    /// Nothing wakes it but its own timer, so that no request pays for waking it (a notification at each
    /// phase change cost three wake-ups of the connection's task per request). That is exact because a phase
    /// change never brings a deadline closer than the timer already is: a phase that begins at or after
    /// `now` ends no earlier than `now` plus the shorter timeout, and the watchdog looks again by then at the
    /// latest. So a connection is looked at once per `header_timeout` (or its deadline, if sooner).
    async fn expired(&self, limits: Limits) -> ConnectionTimeout {
        let look_again = limits.header_timeout.min(limits.idle_timeout);
        loop {
            let now = Instant::now();
            let mut wake = now + look_again;
            if let Some((phase, since_ms)) = self.phase() {
                let limit = match phase {
                    ConnectionTimeout::Header | ConnectionTimeout::Handshake => limits.header_timeout,
                    ConnectionTimeout::Idle => limits.idle_timeout,
                };
                let deadline = self.epoch + Duration::from_millis(since_ms) + limit;
                // Read again: the three fields of a phase are not read at one instant.
                if deadline <= now && self.phase() == Some((phase, since_ms)) {
                    return phase;
                }
                wake = wake.min(deadline);
            }
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// How long the accept loop waits for an evicted connection to give its permit back before it refuses the
/// new one after all (closing an idle connection takes well under a millisecond).
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// The activity of every open connection, from which the accept loop picks one to evict at the cap.
#[derive(Default)]
struct Registry {
    live: parking_lot::Mutex<Live>,
}

#[derive(Default)]
struct Live {
    next: u64,
    connections: std::collections::HashMap<u64, Arc<Activity>>,
}

impl Registry {
    fn register(self: &Arc<Registry>, activity: Arc<Activity>) -> Registered {
        let mut live = self.live.lock();
        let id = live.next;
        live.next += 1;
        live.connections.insert(id, activity);
        Registered {
            registry: self.clone(),
            id,
        }
    }

    /// Tell the connection idle the longest (no request in progress, none begun) to close; `false` if every
    /// connection is busy or in a request head. A scan of the open connections: it runs only at the cap.
    fn evict_longest_idle(&self) -> bool {
        let live = self.live.lock();
        let victim = live
            .connections
            .values()
            .filter(|a| !a.evicted.load(Ordering::Acquire))
            .filter_map(|a| match a.phase() {
                Some((ConnectionTimeout::Idle, since_ms)) => Some((a.now_ms().saturating_sub(since_ms), a)),
                _ => None,
            })
            .max_by_key(|(idle_ms, _)| *idle_ms);
        match victim {
            Some((_, activity)) => {
                activity.evicted.store(true, Ordering::Release);
                activity.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the [`Registry`] when it ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.live.lock().connections.remove(&self.id);
    }
}

/// Counts a request as in progress until dropped (with its response body).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The connection's IO, reporting reads to its [`Activity`].
struct Watched<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request counted as in progress until hyper has sent (or dropped) it.
struct Guarded {
    body: Body,
    _guard: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once its deadline has passed before it ended.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Instant,
    /// Armed the first time the body is not ready, so that requests read at once cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            deadline: Instant::now() + timeout,
            sleep: None,
        }
    }
}

/// The error of a body that did not arrive in time.
#[derive(Debug)]
pub struct BodyTimeout(Duration);

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the body did not arrive within {} (http_body_timeout)",
            crate::config::format_duration(self.0)
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Activity, Limits};
    use crate::metrics::ConnectionTimeout;

    const LIMITS: Limits = Limits {
        header_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_secs(1),
        max_connections: 1,
    };

    /// How long the watchdog of `activity` takes to fire, after `during` ran alongside it.
    async fn fires_after(
        activity: &Activity,
        during: impl std::future::Future<Output = ()>,
    ) -> (ConnectionTimeout, Duration) {
        let started = tokio::time::Instant::now();
        let expired = activity.expired(LIMITS);
        let (phase, ()) = tokio::join!(expired, during);
        (phase, started.elapsed())
    }

    #[tokio::test]
    async fn the_watchdog_times_idle_and_head_phases_and_spares_requests_in_progress() {
        let idle = Activity::new();
        let (phase, took) = fires_after(&idle, async {}).await;
        assert_eq!(phase, ConnectionTimeout::Idle);
        assert!(took >= LIMITS.idle_timeout, "{took:?}");

        // The first byte of a head, after a while idle, starts the shorter header clock.
        let heading = Activity::new();
        let (phase, took) = fires_after(&heading, async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            heading.read();
            heading.read();
        })
        .await;
        assert_eq!(phase, ConnectionTimeout::Header);
        assert!(
            took >= Duration::from_millis(150) && took < LIMITS.idle_timeout,
            "{took:?}"
        );

        // A request in progress for longer than both timeouts is left alone; idleness counts from its end.
        let busy = Activity::new();
        let (phase, took) = fires_after(&busy, async {
            busy.request_started();
            busy.read();
            tokio::time::sleep(Duration::from_millis(500)).await;
            busy.request_ended();
        })
        .await;
        assert_eq!(phase, ConnectionTimeout::Idle);
        assert!(took >= Duration::from_millis(800), "{took:?}");
    }
}
