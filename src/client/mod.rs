//! A client of the public API, for the CLI, the load harness and tests.
//!
//! Wraps tonic's generated client with connection settings that suit an
//! inventory server (short connect timeout, a per-call deadline) and the
//! parsing of the CLI's `SKU@NODE:QTY` notation.

use std::time::Duration;

use thiserror::Error;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::proto::v1::inventory_client::InventoryClient;

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
pub fn endpoint_uri(addr: &str) -> String {
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

/// A parsed `SKU@NODE:NUMBER` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterArg {
    pub sku: String,
    pub node: String,
    pub number: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not SKU@NODE:NUMBER (for example SKU-1@store-7:2)")]
pub struct CounterArgError(pub String);

/// Parses `SKU@NODE:NUMBER`. The SKU is everything before the last `@`, the
/// node everything between it and the last `:`, so SKUs may contain `@`.
pub fn parse_counter_arg(text: &str) -> Result<CounterArg, CounterArgError> {
    let bad = || CounterArgError(text.to_string());
    let (counter, number) = text.rsplit_once(':').ok_or_else(bad)?;
    let (sku, node) = counter.rsplit_once('@').ok_or_else(bad)?;
    if sku.is_empty() || node.is_empty() {
        return Err(bad());
    }
    let number: i64 = number.trim().parse().map_err(|_| bad())?;
    Ok(CounterArg {
        sku: sku.to_string(),
        node: node.to_string(),
        number,
    })
}

/// Parses `SKU@NODE` (no number).
pub fn parse_counter(text: &str) -> Result<(String, String), CounterArgError> {
    let bad = || CounterArgError(text.to_string());
    let (sku, node) = text.rsplit_once('@').ok_or_else(bad)?;
    if sku.is_empty() || node.is_empty() {
        return Err(bad());
    }
    Ok((sku.to_string(), node.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_args_parse() {
        assert_eq!(
            parse_counter_arg("SKU-1@store-7:2").unwrap(),
            CounterArg {
                sku: "SKU-1".into(),
                node: "store-7".into(),
                number: 2
            }
        );
        assert_eq!(parse_counter_arg("a@b@dc:-3").unwrap().sku, "a@b");
        assert!(parse_counter_arg("nosep").is_err());
        assert!(parse_counter_arg("@n:1").is_err());
        assert!(parse_counter_arg("s@n:x").is_err());
        assert_eq!(endpoint_uri("127.0.0.1:1"), "http://127.0.0.1:1");
    }
}
