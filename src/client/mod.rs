//! Connections to a stockraft server: endpoints (plaintext, or TLS when
//! settings are given), channels with the timeouts an inventory server
//! suits (a short connect timeout, a per-call deadline), and the bearer
//! token every call carries.
//!
//! Beneath everything that makes calls: the CLI and the load harness call
//! the public API with it, the server reaches other members with it
//! (forwarding writes to the leader, Raft traffic, joining, rebuilding),
//! and tests call servers with it. `operation.rs`: one operation sent as
//! its unary call or read off a stream, the same result either way.
//! `mux/`: one awaited call per operation for the application, carried
//! over a few `Stream` calls.

pub mod mux;
pub mod operation;

use std::time::Duration;

use thiserror::Error;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::proto::v1::inventory_client::InventoryClient;

/// Why a connection could not be set up.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{0:?} is not a server address (expected HOST:PORT or http://HOST:PORT)")]
    BadAddress(String),
    #[error("cannot connect to {addr}: {error}; is a stockraft server running there?")]
    Connect {
        addr: String,
        error: tonic::transport::Error,
    },
    #[error("a token is letters, digits and punctuation, on one line")]
    BadToken,
    #[error("TLS settings for {addr} refused: {error}")]
    Tls {
        addr: String,
        error: tonic::transport::Error,
    },
}

/// A caller's token, sent with every call (`authorization: Bearer ...`);
/// none when the server asks for none.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Bearer, ClientError> {
        let Some(token) = token else {
            return Ok(Bearer(None));
        };
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| ClientError::BadToken)?;
        Ok(Bearer(Some(value)))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a [`Bearer`] token.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// Turns `HOST:PORT` into the URI tonic wants.
fn endpoint_uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// An endpoint at `addr`, over TLS when `tls` is given (`HOST:PORT`
/// becomes an https URI).
pub fn endpoint(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Endpoint, ClientError> {
    let uri = match (&tls, addr.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        (Some(_), None) if !addr.starts_with("https://") => format!("https://{addr}"),
        _ => endpoint_uri(addr),
    };
    let endpoint =
        Endpoint::from_shared(uri).map_err(|_| ClientError::BadAddress(addr.to_string()))?;
    let Some(tls) = tls else {
        return Ok(endpoint);
    };
    endpoint.tls_config(tls).map_err(|error| ClientError::Tls {
        addr: addr.to_string(),
        error,
    })
}

/// Connects to a server, failing fast when nothing listens there.
pub async fn connect(
    addr: &str,
    call_timeout: Duration,
) -> Result<InventoryClient<Channel>, ClientError> {
    let channel = channel(addr, call_timeout).await?;
    Ok(InventoryClient::new(channel))
}

/// A channel to a server, shared by clients of any of its services.
pub async fn channel(addr: &str, call_timeout: Duration) -> Result<Channel, ClientError> {
    channel_with(addr, call_timeout, None).await
}

/// [`channel`], over TLS when `tls` is given.
pub async fn channel_with(
    addr: &str,
    call_timeout: Duration,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, ClientError> {
    let endpoint = endpoint(addr, tls)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(call_timeout)
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|error| ClientError::Connect {
            addr: addr.to_string(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_becomes_an_http_uri() {
        assert_eq!(endpoint_uri("127.0.0.1:1"), "http://127.0.0.1:1");
    }
}
