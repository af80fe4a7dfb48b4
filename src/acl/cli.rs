//! `cave acl ...`: manage tokens and policies of a running node over its REST API, so an operator needs no
//! curl. The node is `--addr` (default `127.0.0.1:2001`), the token `CAVE_TOKEN`; answers are printed as
//! JSON on stdout, errors as the node's message on stderr.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};

use crate::error::{Error, Result};

/// The variable the CLI reads its token from.
pub const TOKEN_ENV: &str = "CAVE_TOKEN";
/// The node the CLI talks to unless `--addr` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:2001";
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `cave acl`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct AclArgs {
    /// HOST:PORT of the node's REST API [default: 127.0.0.1:2001]; the token comes from CAVE_TOKEN
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// What to manage.
    #[command(subcommand)]
    pub what: AclWhat,
}

/// `cave acl token ...` or `cave acl policy ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AclWhat {
    /// Make, list and revoke tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Store, show and delete policies
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `cave acl token ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TokenCommand {
    /// Make a token and print it (shown this once)
    Create {
        /// A policy the token holds (repeat for several)
        #[arg(long = "policy", value_name = "NAME", required = true)]
        policies: Vec<String>,
        /// What the token is for
        #[arg(long, default_value = "")]
        description: String,
        /// How long the token works (e.g. 24h); forever if absent
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// List tokens (accessors, policies, expiry; never the secrets)
    List,
    /// Revoke the token with this accessor
    Revoke {
        /// Its accessor
        accessor: String,
    },
}

/// `cave acl policy ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum PolicyCommand {
    /// Store the policy in FILE (JSON: {"rules":[{"prefix":"app/","allow":["read"]}]}) as NAME
    Put {
        /// The policy's name
        name: String,
        /// The JSON file
        file: PathBuf,
    },
    /// List policies
    List,
    /// Show one policy
    Get {
        /// The policy's name
        name: String,
    },
    /// Delete a policy
    Delete {
        /// The policy's name
        name: String,
    },
}

/// A resolved `cave acl` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRequest {
    /// `host:port` of the node.
    pub addr: String,
    /// The token, from `CAVE_TOKEN`.
    pub token: Option<String>,
    /// What to do.
    pub what: AclWhat,
}

impl AclRequest {
    /// From the parsed arguments and the environment.
    pub fn new(args: AclArgs, env: &[(String, String)]) -> AclRequest {
        let token = env
            .iter()
            .rev()
            .find(|(name, value)| name == TOKEN_ENV && !value.is_empty())
            .map(|(_, value)| value.trim().to_string());
        AclRequest {
            addr: args.addr.unwrap_or_else(|| DEFAULT_ADDR.to_string()),
            token,
            what: args.what,
        }
    }

    /// The HTTP request this makes: method, path, JSON body.
    fn http(&self) -> Result<(&'static str, String, Option<Vec<u8>>)> {
        let segment =
            |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        Ok(match &self.what {
            AclWhat::Token(TokenCommand::Create {
                policies,
                description,
                ttl,
            }) => {
                let body = serde_json::json!({"policies": policies, "description": description, "ttl": ttl});
                ("POST", "/api/v1/acl/tokens".into(), Some(body.to_string().into_bytes()))
            }
            AclWhat::Token(TokenCommand::List) => ("GET", "/api/v1/acl/tokens".into(), None),
            AclWhat::Token(TokenCommand::Revoke { accessor }) => {
                ("DELETE", format!("/api/v1/acl/tokens/{}", segment(accessor)), None)
            }
            AclWhat::Policy(PolicyCommand::Put { name, file }) => {
                let body = std::fs::read(file)
                    .map_err(|e| Error::invalid(format!("cannot read policy file {}: {e}", file.display())))?;
                ("PUT", format!("/api/v1/acl/policies/{}", segment(name)), Some(body))
            }
            AclWhat::Policy(PolicyCommand::List) => ("GET", "/api/v1/acl/policies".into(), None),
            AclWhat::Policy(PolicyCommand::Get { name }) => {
                ("GET", format!("/api/v1/acl/policies/{}", segment(name)), None)
            }
            AclWhat::Policy(PolicyCommand::Delete { name }) => {
                ("DELETE", format!("/api/v1/acl/policies/{}", segment(name)), None)
            }
        })
    }

    /// Send the request; the node's JSON answer on success, its error message otherwise.
    pub async fn run(&self) -> Result<serde_json::Value> {
        let (method, path, body) = self.http()?;
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| Error::Unavailable(format!("cannot connect to {}: {e}", self.addr)))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Error::Unavailable(format!("HTTP handshake with {} failed: {e}", self.addr)))?;
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(&path)
                .header("host", &self.addr)
                .header("user-agent", "cave-acl");
            if let Some(token) = &self.token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if body.is_some() {
                request = request.header("content-type", "application/json");
            }
            let request = request
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| Error::invalid(format!("cannot build the request: {e}")))?;
            // The connection is driven beside the request and ends with it (the node closes it or the
            // request finishes): nothing outlives this function.
            let (response, _) = tokio::join!(
                async {
                    let response = sender.send_request(request).await;
                    drop(sender);
                    response
                },
                connection
            );
            let response = response.map_err(|e| Error::Unavailable(format!("no answer from {}: {e}", self.addr)))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::Unavailable(format!("the answer from {} broke off: {e}", self.addr)))?
                .to_bytes();
            Ok::<_, Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Unavailable(format!("{} did not answer within {REQUEST_TIMEOUT:?}", self.addr)))??;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| Error::Internal(format!("{} answered {status} with a body that is not JSON", self.addr)))?;
        if status.is_success() {
            return Ok(json);
        }
        let message = json["error"].as_str().unwrap_or("no message").to_string();
        let hint = if status == 401 && self.token.is_none() {
            format!(" (set {TOKEN_ENV})")
        } else {
            String::new()
        };
        Err(Error::InvalidInput(format!(
            "{} answered {status}: {message}{hint}",
            self.addr
        )))
    }
}
