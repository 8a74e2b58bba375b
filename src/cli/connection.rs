//! How a client command reaches a server: the flags (address, deadline,
//! TLS, token), the channels they make, and how a refused call reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;

use stockraft::client;
use stockraft::proto::v1::inventory_client::InventoryClient;
use stockraft::tls::{ClientTls, KeyPair};

use super::parse_duration;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server to call.
    #[arg(
        long,
        env = "STOCKRAFT_SERVER",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub server: String,
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

    /// A channel to --server.
    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        self.channel_to(&self.server).await
    }

    /// A channel to `address` whose calls carry --token.
    pub async fn authed_to(&self, address: &str) -> Result<client::Authed> {
        let bearer = self.security.bearer()?;
        let channel = self.channel_to(address).await?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel, bearer,
        ))
    }

    /// An Inventory client of --server.
    pub async fn connect(&self) -> Result<InventoryClient<client::Authed>> {
        Ok(InventoryClient::new(self.authed_to(&self.server).await?))
    }
}

/// A refused call as the CLI reports it: the status code's name and the
/// server's message.
pub(super) fn status_error(status: tonic::Status) -> anyhow::Error {
    // What a plaintext call to a TLS port gets back: the server's TLS
    // record read as HTTP/2. Say what it most likely means.
    let hint = if status.message().contains("h2 protocol error") {
        " (does the server use TLS? then pass --tls-ca with its CA certificate)"
    } else {
        ""
    };
    anyhow!(
        "{}: {}{hint}",
        stockraft::server::status::code_label(status.code()),
        status.message()
    )
}
