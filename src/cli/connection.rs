//! How a client command reaches a server: the flags (addresses, deadline,
//! TLS, token), the channels they make, which member it calls (the leader,
//! found through the health service), and how a refused call reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use stockraft::client;
use stockraft::proto::v1::inventory_client::InventoryClient;
use stockraft::tls::{ClientTls, KeyPair};

use super::exit::{CallFailed, UsageError};
use super::parse_duration;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The cluster's members: ADDR[,ADDR...]. Calls go to the leader
    /// (found through the health service), else to the first member that
    /// answers.
    #[arg(
        long,
        env = "STOCKRAFT_SERVER",
        default_value = "127.0.0.1:50051",
        value_delimiter = ',',
        global = true
    )]
    pub server: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a call after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// TLS and token settings of a client (the CLI, `stockraft load`).
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// Call over TLS, trusting the server's certificate when this CA (PEM)
    /// signed it.
    #[arg(long, env = "STOCKRAFT_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for servers that ask for one (with
    /// --tls-client-key and --tls-ca).
    #[arg(long, env = "STOCKRAFT_TLS_CLIENT_CERT", global = true, requires_all = ["tls_client_key", "tls_ca"])]
    pub tls_client_cert: Option<PathBuf>,
    /// The key of --tls-client-cert (PEM).
    #[arg(
        long,
        env = "STOCKRAFT_TLS_CLIENT_KEY",
        global = true,
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
    /// The bearer token to call with, for servers started with --tokens.
    #[arg(long, env = "STOCKRAFT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

impl SecurityArgs {
    /// TLS as the flags ask for it: None for plaintext.
    pub fn tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Some(KeyPair {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let tls = ClientTls {
            ca: ca.clone(),
            identity,
        };
        Ok(Some(tls.config()?))
    }

    pub fn bearer(&self) -> Result<client::Bearer> {
        Ok(client::Bearer::new(self.token.as_deref())?)
    }
}

impl ClientArgs {
    /// A channel to `address` with these settings.
    pub async fn channel_to(&self, address: &str) -> Result<tonic::transport::Channel> {
        let tls = self.security.tls()?;
        Ok(client::channel_with(address, self.timeout, tls).await?)
    }

    /// A channel to the member to call (see [`ClientArgs::target`]).
    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        self.channel_to(&self.target().await?).await
    }

    /// The member to call: the only one given; else the one whose health
    /// says it leads (`stockraft.v1.Leader` SERVING), sparing the forward
    /// a follower would make; else the first that answers at all.
    pub async fn target(&self) -> Result<String> {
        let [first, ..] = self.server.as_slice() else {
            return Err(UsageError("--server names no member".into()).into());
        };
        if self.server.len() == 1 {
            return Ok(first.clone());
        }
        let mut reachable = None;
        let mut last_error = None;
        for address in &self.server {
            match self.leads(address).await {
                Ok(true) => return Ok(address.clone()),
                Ok(false) => {
                    reachable.get_or_insert_with(|| address.clone());
                }
                Err(e) => last_error = Some(e),
            }
        }
        match (reachable, last_error) {
            (Some(address), _) => Ok(address),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(first.clone()),
        }
    }

    /// Whether the member at `address` says it leads.
    async fn leads(&self, address: &str) -> Result<bool> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        let channel = self.channel_to(address).await?;
        let answer = HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: LEADER_HEALTH.into(),
            })
            .await
            .map_err(status_error)?;
        Ok(answer.into_inner().status == ServingStatus::Serving as i32)
    }

    /// A channel to `address` whose calls carry --token.
    pub async fn authed_to(&self, address: &str) -> Result<client::Authed> {
        let bearer = self.security.bearer()?;
        let channel = self.channel_to(address).await?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel, bearer,
        ))
    }

    /// An Inventory client of the member to call.
    pub async fn connect(&self) -> Result<InventoryClient<client::Authed>> {
        let target = self.target().await?;
        Ok(InventoryClient::new(self.authed_to(&target).await?))
    }
}

/// The health entry only the leader reports SERVING.
const LEADER_HEALTH: &str = "stockraft.v1.Leader";

/// A refused call as the CLI reports it: the status code's name and the
/// server's message (and, with --json, the status and its details).
pub(super) fn status_error(status: tonic::Status) -> anyhow::Error {
    // What a plaintext call to a TLS port gets back: the server's TLS
    // record read as HTTP/2. Say what it most likely means.
    let hint = if status.message().contains("h2 protocol error") {
        " (does the server use TLS? then pass --tls-ca with its CA certificate)"
    } else {
        ""
    };
    CallFailed {
        status,
        hint: hint.to_string(),
    }
    .into()
}
