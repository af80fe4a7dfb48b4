//! Adapters between Cave's transports and turmoil's simulated network.
//!
//! A real node talks gRPC (tonic) to its peers and HTTP (axum) to its clients. Both take their sockets from
//! the outside: the gRPC server a stream of connections ([`incoming`]), the gRPC client a
//! [`cave::grpc::Dialer`] ([`dialer`]), axum a [`Listener`] ([`HttpListener`]). Here those are backed by
//! `turmoil::net`, so partitions, latency and crashes act on the very HTTP/2 connections production uses,
//! with production's timeouts and keep-alives.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use bytes::Bytes;
use futures::Stream;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::Uri;

/// A simulated TCP connection that tonic's server accepts.
pub struct SimConn(pub turmoil::net::TcpStream);

impl Connected for SimConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`, for [`cave::node::Node::start_cluster_on`].
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = io::Result<SimConn>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| SimConn(stream));
        Some((conn, listener))
    })
}

/// A dialer connecting over the simulated network (names resolve through turmoil's DNS), with the
/// production endpoint settings, or with `fault`.
pub fn dialer(fault: Option<TransportFault>) -> cave::grpc::Dialer {
    let keep_alive = !matches!(
        fault,
        Some(TransportFault::NoKeepAlive | TransportFault::NoKeepAliveNoRedial)
    );
    let dialer = cave::grpc::Dialer::new(move |endpoint| {
        let endpoint = if keep_alive {
            endpoint
        } else {
            // No pings: hyper's keep-alive is off unless an interval is set, and the production endpoint
            // sets one; an interval longer than any run is the same as none.
            endpoint
                .http2_keep_alive_interval(Duration::from_secs(1_000_000))
                .keep_alive_while_idle(false)
        };
        endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host, port)).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }))
    });
    dialer.redial(fault != Some(TransportFault::NoKeepAliveNoRedial))
}

/// A deliberately weakened transport or leave path, to see what its safeguards are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFault {
    /// HTTP/2 keep-alives off (DESIGN.md section 11's pitfall). Black-holed connections are still
    /// abandoned after [`cave::grpc::REDIAL_AFTER_TIMEOUTS`] request timeouts: runs must still pass.
    NoKeepAlive,
    /// Keep-alives off and no redial: requests on a connection a partition black-holed time out forever
    /// after the partition heals. Runs with partitions must fail.
    NoKeepAliveNoRedial,
    /// `shutdown_drain = 0s`: a stopping node leaves without handing what it holds to a peer. The `leave`
    /// scenario must fail: writes only the leaving node had seen vanish with it.
    NoDrain,
    /// The disk-full bug of issue 15, put back: a store that answers a commit on a full disk as if it had
    /// succeeded (and stores nothing). The `disk-full` scenario must fail: writes acknowledged by the node
    /// while its disk was full and it was cut off vanish when it restarts.
    AcksOnFullDisk,
}

impl TransportFault {
    /// Every fault.
    pub const ALL: [TransportFault; 4] = [
        TransportFault::NoKeepAlive,
        TransportFault::NoKeepAliveNoRedial,
        TransportFault::NoDrain,
        TransportFault::AcksOnFullDisk,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            TransportFault::NoKeepAlive => "no-keep-alive",
            TransportFault::NoKeepAliveNoRedial => "no-keep-alive-no-redial",
            TransportFault::NoDrain => "no-drain",
            TransportFault::AcksOnFullDisk => "acks-on-full-disk",
        }
    }

    /// The fault called `name`.
    pub fn parse(name: &str) -> Option<TransportFault> {
        TransportFault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A simulated listener axum serves HTTP on.
pub struct HttpListener(pub turmoil::net::TcpListener);

impl Listener for HttpListener {
    type Io = turmoil::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // Like axum's own TCP listener: back off briefly rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// How long a client waits for one HTTP answer before it counts the request as failed (outcome unknown).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The root token every simulated node is configured with, and the workload sends (access control is on
/// in prod mode).
pub const ROOT_TOKEN: &str = "simulation-root-token-0123456789";

/// One HTTP/1.1 request over a fresh simulated connection: `(status, body)`, or an error if the host was
/// unreachable or did not answer within [`REQUEST_TIMEOUT`].
pub async fn request(host: &str, port: u16, method: &str, path: &str, body: Bytes) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let stream = turmoil::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("authorization", format!("Bearer {ROOT_TOKEN}"))
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err("timed out".into()),
    }
}
