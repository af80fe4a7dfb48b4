//! The table of settings: every setting of a node, declared once (see `table.rs` for what a row becomes).
//! Keep the rows of a group together; the groups are the records of the start-up log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::layers::Fields;
use super::table::{given_or, settings};
use super::values::{
    format_size, parse_addr, parse_advertise_addr, parse_allowed_hosts, parse_bool, parse_cluster_size,
    parse_cors_origins, parse_dir, parse_duration_value, parse_enum, parse_file, parse_key, parse_log_level,
    parse_max_connections, parse_nonzero_duration, parse_peers, parse_root_token, parse_size_value,
};
use super::{
    Mode, DEFAULT_ANTI_ENTROPY_INTERVAL, DEFAULT_AUDIT_RETENTION, DEFAULT_DATA_DIR, DEFAULT_DISCOVERY_WINDOW,
    DEFAULT_HTTP_BODY_TIMEOUT, DEFAULT_HTTP_HEADER_TIMEOUT, DEFAULT_HTTP_IDLE_TIMEOUT, DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_CLOCK_DRIFT, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TTL, DEFAULT_MAX_VALUE_BYTES, DEFAULT_MIN_TTL,
    DEFAULT_SHUTDOWN_DRAIN, DEFAULT_TOMBSTONE_TTL, HTTP_FD_HEADROOM,
};
use crate::acl::token::SecretToken;
use crate::error::Result;
use crate::secrets::MasterKey;
use crate::storage::Durability;

settings! {
    group "configuration: node" {
        /// Dev or prod; decides the default bind addresses (see [`Mode::default_bind_ip`]).
        mode: Mode {
            flag: Mode [value_enum, value_name = "dev|prod", hide_possible_values = true]
                "dev binds to loopback only; prod binds to every interface",
            default: |_| Mode::Dev,
            parse: parse_enum::<Mode>,
        }
        /// Database, node id and dev key live here; a relative path is relative to the working directory, also
        /// when it comes from a config file, so that every source means the same thing.
        data_dir: PathBuf {
            flag: String [value_name = "DIR"] "Directory of the database, node id and local key",
            default: |_| PathBuf::from(DEFAULT_DATA_DIR),
            parse: parse_dir,
        }
        /// How hard a commit tries to reach the disk before a write is acknowledged.
        durability: Durability {
            flag: Durability [value_enum, value_name = "normal|fsync", hide_possible_values = true]
                "normal survives a process crash; fsync also a power loss, at a cost per commit",
            default: |_| Durability::default(),
            parse: parse_enum::<Durability>,
        }
        /// Start even though the data directory has lost state it had: its database is missing or empty while
        /// `node.id` exists, or the key file (`node.key`, or `cluster.key` of a prod node without a configured
        /// key) is missing while the database holds sealed secrets. Off: such a node refuses to start, naming the
        /// file, rather than serve an empty database or make a new key that cannot open the old secrets.
        allow_empty_start: bool {
            flag: String [value_name = "true|false", num_args = 0..=1, default_missing_value = "true"]
                "Start although the database (or, with sealed secrets, the key file) of a used data dir is \
                 missing; --allow-empty-start alone means true",
            default: |_| false,
            parse: parse_bool,
        }
        /// Let this start found a new cluster on a used data directory: make a new key although the data
        /// directory belongs to a cluster (no key is configured and its key file is gone), or adopt a
        /// configured key of another cluster than the one the data directory recorded. Off: such a node refuses
        /// to start (see `node`, "Cluster identity"). Meant for one start, not to be left on.
        new_cluster: bool {
            flag: String [value_name = "true|false", num_args = 0..=1, default_missing_value = "true"]
                "Found a new cluster on a used data dir: make a new key although the dir's cluster key is lost, \
                 or adopt a key of another cluster than the one it recorded (for one start; --new-cluster alone \
                 means true)",
            default: |_| false,
            parse: parse_bool,
        }
        /// A `tracing_subscriber::EnvFilter` directive string (`info`, `warn,cave=debug`).
        log_level: String {
            flag: String [value_name = "FILTER"]
                "Log filter: a level (trace, debug, info, warn, error, off) and/or target=level, comma-separated",
            default: |_| DEFAULT_LOG_LEVEL.to_string(),
            parse: parse_log_level,
        }
        /// Log one line per HTTP request (target `cave::access`): method, route template, status, duration and
        /// bytes sent; never a key, a value or a query string.
        access_log: bool {
            flag: String [value_name = "true|false", num_args = 0..=1, default_missing_value = "true"]
                "Log one line per HTTP request (method, route, status, duration, bytes); --access-log alone means \
                 true",
            default: |_| false,
            parse: parse_bool,
        }
    }
    group "configuration: network" {
        /// Where the REST API and web UI listen. Port 0 picks a free port (tests).
        http_addr: SocketAddr {
            flag: String [value_name = "IP:PORT"] "Address of the REST API and web UI",
            default: Mode::default_http_addr,
            parse: parse_addr,
            help_default: |dev: &Config| {
                format!("{} in dev mode, {} in prod", dev.http_addr, Mode::Prod.default_http_addr())
            },
        }
        /// Where replication peers connect. Kept apart from `http_addr` so the API can be firewalled differently.
        grpc_addr: SocketAddr {
            flag: String [value_name = "IP:PORT"] "Address of the replication (gRPC) endpoint",
            default: Mode::default_grpc_addr,
            parse: parse_addr,
            help_default: |dev: &Config| {
                format!("{} in dev mode, {} in prod", dev.grpc_addr, Mode::Prod.default_grpc_addr())
            },
        }
        /// The `host:port` peers use to reach `grpc_addr`, when that differs from what the node can work out
        /// (behind NAT, in a container). `None`: see [`Config::advertise_grpc`].
        advertise_addr: Option<String> {
            flag: String [value_name = "HOST:PORT"]
                "Address peers use to reach the replication endpoint, if not grpc-addr (NAT, containers)",
            default: |_| None,
            parse: parse_advertise_addr,
            help_default: |_: &Config| "grpc-addr, with this host's name if its IP is unspecified".to_string(),
        }
        /// Seed peers (`host:port`) to join through; knowing one live member is enough to learn the others, so
        /// this needs no updating as the cluster grows.
        peers: Vec<String> {
            flag: String [value_name = "HOST:PORT|dns:NAME[:PORT],..."]
                "Seed peers to join, comma-separated replication addresses; dns:NAME or dns:NAME:PORT dials \
                 every address NAME resolves to, looked up again and again (a headless service, a scaled \
                 compose service)",
            default: |_| Vec::new(),
            parse: parse_peers,
        }
        /// Whether to announce this node and find others with mDNS (`_cave._tcp.local.`) on the local network.
        mdns: bool {
            flag: String [value_name = "true|false", num_args = 0..=1, default_missing_value = "true"]
                "Find peers and announce this node with mDNS on the local network; --mdns alone means true",
            default: Mode::default_mdns,
            parse: parse_bool,
            help_default: |dev: &Config| format!("{} in dev mode, {} in prod", dev.mdns, Mode::Prod.default_mdns()),
        }
        /// In prod mode, how long a node looks for peers (seeds, mDNS) before it considers itself the first node
        /// of a new cluster. May be zero.
        discovery_window: Duration {
            flag: String [value_name = "DURATION"] "In prod mode, how long to look for peers before founding a new cluster",
            default: |_| DEFAULT_DISCOVERY_WINDOW,
            parse: parse_duration_value,
        }
        /// How many members the cluster has, if the operator knows: lock majorities are counted of at least this
        /// many, so that a node that has not yet found every member (a partition while the cluster forms)
        /// cannot grant on the votes of the few it knows. 0: the members this node knows.
        cluster_size: usize {
            flag: String [value_name = "N"] "Members of the cluster, counted for lock majorities (0: those known)",
            default: |_| 0,
            parse: parse_cluster_size,
        }
        /// Whether `/readyz` answers 503 (rather than 200) while the node is *isolated*: it has seeds (`peers`)
        /// but reaches none of them and knows no live member. Off by default: an isolated node still serves
        /// what it holds, and taking every node of a cluster split by a network fault out of a load balancer
        /// would turn a partition into an outage.
        isolated_unready: bool {
            flag: String [value_name = "true|false", num_args = 0..=1, default_missing_value = "true"]
                "Answer /readyz with 503 while no seed peer is reachable and no member is known (isolated); else 200",
            default: |_| false,
            parse: parse_bool,
        }
        /// The cluster key, shared by every member. `None` lets the node use (or create) the key in its data
        /// directory. Never printed: it redacts itself.
        cluster_key: Option<MasterKey> {
            flag: String [value_name = "BASE64"]
                "Cluster key from `cave keygen` (prefer CAVE_CLUSTER_KEY: flags are visible in ps)",
            default: |_| None,
            parse: |value| parse_key(value).map(Some),
        }
        /// The file `cluster_key` was read from (secrets managers mount keys as files), if it was. Setting both
        /// is an error.
        cluster_key_file: Option<PathBuf> {
            flag: String [value_name = "FILE"]
                "File holding the cluster key (a mounted secret; a trailing newline is fine); not with --cluster-key",
            default: |_| None,
            parse: |value| parse_dir(value).map(Some),
        }
        /// Host names (of the `Host` header) the REST API answers besides its own addresses, loopback names and
        /// this machine's name; `*` answers any. Guards against DNS rebinding.
        allowed_hosts: Vec<String> {
            flag: String [value_name = "HOST,..."]
                "Host names the REST API answers besides its own addresses and loopback, comma-separated; * for any",
            default: |_| Vec::new(),
            parse: parse_allowed_hosts,
        }
        /// Origins (`https://app.example.com`, `http://localhost:3000`) of browser apps allowed to use the REST
        /// API across origins: their CORS preflights are answered and their writes are not refused as
        /// cross-site. Empty: no CORS, only the node's own pages may write from a browser.
        cors_origins: Vec<String> {
            flag: String [value_name = "ORIGIN,..."]
                "Origins (scheme://host or scheme://host:port) of browser apps allowed to call the API across \
                 origins (CORS), comma-separated",
            default: |_| Vec::new(),
            parse: parse_cors_origins,
        }
        /// The certificate chain the REST API serves HTTPS with, set together with `tls_key` (see
        /// [`Config::tls`]). `None`: plain HTTP.
        tls_cert: Option<PathBuf> {
            flag: String [value_name = "FILE"]
                "PEM certificate chain: the REST API then speaks HTTPS only (with --tls-key; re-read on SIGHUP)",
            default: |_| None,
            parse: parse_file,
        }
        /// The private key of `tls_cert`.
        tls_key: Option<PathBuf> {
            flag: String [value_name = "FILE"] "PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)",
            default: |_| None,
            parse: parse_file,
        }
    }
    group "configuration: access" {
        /// Whether every request needs a token (see docs/security.md). `None`: on in prod mode, off in dev
        /// mode; see [`Config::acl_enabled`].
        acl: Option<bool> {
            flag: String [value_name = "true|false", num_args = 0..=1, default_missing_value = "true"]
                "Require a token for every request but /healthz, /readyz and the UI's files; --acl alone means true",
            default: |_| None,
            parse: |value| parse_bool(value).map(Some),
            help_default: |dev: &Config| format!("{} in dev mode, true in prod", dev.acl_enabled()),
            shown: |config: &Config| config.acl_enabled(),
        }
        /// The root token, a management token this node accepts whatever the replicated ACL holds (Consul's
        /// initial management token). Never printed: it redacts itself.
        acl_root_token: Option<SecretToken> {
            flag: String [value_name = "TOKEN"]
                "A management token every request may use (prefer CAVE_ACL_ROOT_TOKEN: flags are visible in ps)",
            default: |_| None,
            parse: |value| parse_root_token(value).map(Some),
            help_default: |_: &Config| "none; a founding prod node makes one".to_string(),
        }
        /// Whether `/api/v1/perf/metrics` answers without a token while access control is on.
        metrics_public: bool {
            flag: String [value_name = "true|false", num_args = 0..=1, default_missing_value = "true"]
                "Serve /api/v1/perf/metrics without a token while access control is on; --metrics-public alone \
                 means true",
            default: |_| false,
            parse: parse_bool,
        }
        /// Audit records older than this are deleted (see `crate::audit`). Never zero.
        audit_retention: Duration {
            flag: String [value_name = "DURATION"] "Age at which audit records are deleted",
            default: |_| DEFAULT_AUDIT_RETENTION,
            parse: parse_nonzero_duration,
        }
    }
    group "configuration: limits and timing" {
        /// Largest value a single key may hold; bounds memory per entry and replication message size.
        max_value_bytes: usize {
            flag: String [value_name = "SIZE"] "Largest value of one key",
            default: |_| DEFAULT_MAX_VALUE_BYTES,
            parse: parse_size_value,
            help_default: |dev: &Config| format_size(dev.max_value_bytes),
        }
        /// Largest body of `POST /api/v1/query` and `/api/v1/import`, which carry many values at once; at least
        /// `max_value_bytes`, or a request could not carry even one maximal value.
        max_request_bytes: usize {
            flag: String [value_name = "SIZE"] "Largest body of a /api/v1/query or /api/v1/import request",
            default: |_| DEFAULT_MAX_REQUEST_BYTES,
            parse: parse_size_value,
            help_default: |dev: &Config| format_size(dev.max_request_bytes),
        }
        /// Mean interval between two anti-entropy rounds started by this node (jittered). Never zero.
        anti_entropy_interval: Duration {
            flag: String [value_name = "DURATION"] "Mean interval between anti-entropy rounds with a random peer",
            default: |_| DEFAULT_ANTI_ENTROPY_INTERVAL,
            parse: parse_nonzero_duration,
        }
        /// A remote version stamped further than this ahead of the local clock waits until the clock catches up.
        /// May be zero.
        max_clock_drift: Duration {
            flag: String [value_name = "DURATION"]
                "Versions stamped further ahead of the local clock wait until it catches up",
            default: |_| DEFAULT_MAX_CLOCK_DRIFT,
            parse: parse_duration_value,
        }
        /// Tombstones older than this are purged. Never zero.
        tombstone_ttl: Duration {
            flag: String [value_name = "DURATION"] "Age at which tombstones (deleted keys) are purged",
            default: |_| DEFAULT_TOMBSTONE_TTL,
            parse: parse_nonzero_duration,
        }
        /// The shortest `?ttl=` a write may ask for. Never zero.
        min_ttl: Duration {
            flag: String [value_name = "DURATION"] "Shortest TTL a write may ask for (?ttl=)",
            default: |_| DEFAULT_MIN_TTL,
            parse: parse_nonzero_duration,
        }
        /// The longest `?ttl=` a write may ask for. Never zero.
        max_ttl: Duration {
            flag: String [value_name = "DURATION"] "Longest TTL a write may ask for (?ttl=)",
            default: |_| DEFAULT_MAX_TTL,
            parse: parse_nonzero_duration,
        }
        /// How long a stopping node tries to hand what it holds to a peer (an anti-entropy round with an alive
        /// member) before it leaves the cluster. Zero leaves at once.
        shutdown_drain: Duration {
            flag: String [value_name = "DURATION"]
                "How long a stopping node tries to hand its writes to a peer before leaving (0s: leave at once)",
            default: |_| DEFAULT_SHUTDOWN_DRAIN,
            parse: parse_duration_value,
        }
        /// A connection that has sent part of a request head is closed if the head is not complete this long
        /// after its first byte. Never zero.
        http_header_timeout: Duration {
            flag: String [value_name = "DURATION"]
                "Close a connection whose request head is not complete this long after its first byte",
            default: |_| DEFAULT_HTTP_HEADER_TIMEOUT,
            parse: parse_nonzero_duration,
        }
        /// A connection with no request in progress is closed after this long. Never zero.
        http_idle_timeout: Duration {
            flag: String [value_name = "DURATION"] "Close a connection that has had no request in progress for this long",
            default: |_| DEFAULT_HTTP_IDLE_TIMEOUT,
            parse: parse_nonzero_duration,
        }
        /// A request body must arrive in full within this long of its head, or the request fails. Never zero.
        http_body_timeout: Duration {
            flag: String [value_name = "DURATION"]
                "Fail a request whose body has not arrived in full this long after its head",
            default: |_| DEFAULT_HTTP_BODY_TIMEOUT,
            parse: parse_nonzero_duration,
        }
        /// Most HTTP connections open at once; past it the longest-idle connection is closed. `None`: derived at
        /// start-up from the file descriptor limit, see [`Config::max_connections`].
        http_max_connections: Option<usize> {
            flag: String [value_name = "COUNT"]
                "Most HTTP connections open at once; past it the longest-idle connection is closed",
            default: |_| None,
            parse: parse_max_connections,
            help_default: |_: &Config| format!("the open-files limit less {HTTP_FD_HEADROOM}"),
        }
    }
}
