//! Who may call what: bearer tokens with roles, checked before a call
//! reaches a service.
//!
//! Three roles, each allowed what the one before it is: `read`
//! (availability and reservation reads), `write` (every mutation, the
//! `Stream` call), `admin` (the Cluster service). Tokens come from a file
//! (`--tokens`) of lines `ROLE SHA256-OF-TOKEN [NAME]`: the server keeps
//! only the tokens' hashes, and re-reads the file on SIGHUP. A call
//! without a token, or with one the file does not list, is answered
//! UNAUTHENTICATED; a token whose role is too low, PERMISSION_DENIED.
//! Health and reflection are open (probes, grpcurl), and so is a member
//! presenting its member certificate on the client port (when that port
//! asks for client certificates), which is how members join, rebuild and
//! forward; a forwarded call keeps its caller's token, and the member it
//! reached first has checked it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::future::Either;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};

use super::status::Problem;

use crate::tls::member_of_certificate;

/// What a caller may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// The role a call needs, by its gRPC path; None for the open services.
pub(crate) fn role_needed(path: &str) -> Option<Role> {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return None;
    }
    match path {
        "/stockraft.v1.Inventory/GetAvailability" | "/stockraft.v1.Inventory/GetReservation" => {
            Some(Role::Read)
        }
        _ if path.starts_with("/stockraft.v1.Inventory/") => Some(Role::Write),
        // The Cluster service, and anything else (test-only services).
        _ => Some(Role::Admin),
    }
}

#[derive(Debug, Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The tokens a server accepts: their SHA-256, with role and name.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], (Role, String)>,
}

impl Tokens {
    /// Reads `ROLE SHA256-HEX [NAME]` lines; `#` starts a comment.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut by_hash = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| TokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let mut fields = line.split_whitespace();
            let role = fields
                .next()
                .and_then(Role::parse)
                .ok_or_else(|| bad("the role must be read, write or admin"))?;
            let hash = fields
                .next()
                .and_then(parse_hash)
                .ok_or_else(|| bad("the token's SHA-256 must be 64 hex digits"))?;
            let name = fields.next().unwrap_or("").to_string();
            by_hash.insert(hash, (role, name));
        }
        Ok(Tokens { by_hash })
    }

    /// The role of `token`, if the file lists it.
    pub(crate) fn role_of(&self, token: &str) -> Option<Role> {
        self.by_hash.get(&hash_token(token)).map(|(role, _)| *role)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The SHA-256 of a token, as the tokens file lists it.
pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hash_hex(token: &str) -> String {
    hash_token(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh token: 32 random bytes, hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tokens in force, swapped whole on reload.
pub(crate) type SharedTokens = Arc<ArcSwap<Tokens>>;

/// Decides a call from its path, headers and connection.
fn check<B>(tokens: &Tokens, request: &http::Request<B>) -> Result<(), Status> {
    let Some(needed) = role_needed(request.uri().path()) else {
        return Ok(());
    };
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let role =
        match bearer {
            Some(token) => tokens.role_of(token.trim()),
            None if is_member(request) => Some(Role::Admin),
            None => return Err(Problem::new(
                Code::Unauthenticated,
                "TOKEN_MISSING",
                "this call needs a token: send `authorization: Bearer TOKEN` (stockraft --token)",
            )
            .into_status()),
        };
    let Some(role) = role else {
        return Err(Problem::new(
            Code::Unauthenticated,
            "TOKEN_UNKNOWN",
            "the token is not one this server accepts",
        )
        .into_status());
    };
    if role < needed {
        return Err(Problem::new(
            Code::PermissionDenied,
            "ROLE_TOO_LOW",
            format!(
                "this call needs the {} role; the token has {}",
                needed.name(),
                role.name()
            ),
        )
        .fact("role", role.name())
        .fact("role_needed", needed.name())
        .into_status());
    }
    Ok(())
}

/// Whether the caller presented a member's certificate (verified by the
/// TLS handshake against the CA the port trusts).
fn is_member<B>(request: &http::Request<B>) -> bool {
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .and_then(|certs| certs.first().and_then(|c| member_of_certificate(c)))
        .is_some()
}

/// The tower layer that checks every call against the tokens (None:
/// tokens are off, every call passes).
#[derive(Clone)]
pub(crate) struct AuthLayer {
    tokens: Option<SharedTokens>,
}

impl AuthLayer {
    pub fn new(tokens: Option<SharedTokens>) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    tokens: Option<SharedTokens>,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(tokens) = &self.tokens else {
            return Either::Left(self.inner.call(request));
        };
        match check(&tokens.load(), &request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(status) => {
                metrics::counter!("stockraft_calls_refused_total", "code" => super::status::code_label(status.code()))
                    .increment(1);
                Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Re-reads the tokens file on every SIGHUP; a file that cannot be read
/// or parsed leaves the tokens in force as they were, and says why.
pub(crate) fn reload_on_sighup(path: PathBuf, tokens: SharedTokens) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP: the tokens file is read at start only");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match Tokens::load(&path) {
                Ok(loaded) => {
                    tracing::info!(tokens = loaded.len(), "tokens file read again (SIGHUP)");
                    tokens.store(Arc::new(loaded));
                }
                Err(e) => tracing::error!("tokens kept as they were: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, token: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn roles_follow_the_call_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let line = |role: &str, token: &str| format!("{role} {} {role}-name\n", hash_hex(token));
        let text = format!(
            "# comment\n{}{}{}\n",
            line("read", "r"),
            line("write", "w"),
            line("admin", "a")
        );
        std::fs::write(&path, text).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.len(), 3);
        let code = |path: &str, token: Option<&str>| {
            check(&tokens, &request(path, token))
                .err()
                .map(|s| s.code())
        };
        use tonic::Code::*;
        let read = "/stockraft.v1.Inventory/GetAvailability";
        let write = "/stockraft.v1.Inventory/Reserve";
        let stream = "/stockraft.v1.Inventory/Stream";
        let admin = "/stockraft.v1.Cluster/RemoveMember";
        for (path, token, want) in [
            (read, None, Some(Unauthenticated)),
            (read, Some("nope"), Some(Unauthenticated)),
            (read, Some("r"), None),
            (write, Some("r"), Some(PermissionDenied)),
            (write, Some("w"), None),
            (stream, Some("w"), None),
            (admin, Some("w"), Some(PermissionDenied)),
            (admin, Some("a"), None),
            (read, Some("a"), None),
            ("/grpc.health.v1.Health/Check", None, None),
            ("/unknown.Service/Call", Some("w"), Some(PermissionDenied)),
        ] {
            assert_eq!(code(path, token), want, "{path} with {token:?}");
        }
    }

    #[test]
    fn a_bad_line_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "write 1234\n").unwrap();
        let err = Tokens::load(&path).unwrap_err().to_string();
        assert!(err.contains(":1:") && err.contains("64 hex"), "{err}");
        std::fs::write(&path, format!("root {}\n", hash_hex("x"))).unwrap();
        let err = Tokens::load(&path).unwrap_err().to_string();
        assert!(err.contains("read, write or admin"), "{err}");
    }
}
