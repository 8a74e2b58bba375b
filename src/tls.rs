//! TLS for clients and members: certificates read from files, and the
//! name that makes a certificate a member's.
//!
//! A member's certificate names it with a DNS name, `member-ID.stockraft`
//! ([`member_name`]), beside the hosts it is reached at. Members talk over
//! mutual TLS on their peer listener: the caller checks that the server's
//! certificate bears the name of the member it meant to reach (rustls's
//! own host-name check, pointed at that name), and the server reads the
//! caller's member id from its certificate ([`member_of_certificate`]) and
//! refuses Raft traffic that claims to come from another member. One CA
//! (`stockraft certs`) signs members' and clients' certificates.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS suffix of members' names in their certificates.
pub(crate) const MEMBER_DOMAIN: &str = "stockraft";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NotPem { path: PathBuf },
}

/// The name member `id`'s certificate bears.
pub(crate) fn member_name(id: u64) -> String {
    format!("member-{id}.{MEMBER_DOMAIN}")
}

/// The member a certificate (DER) names, if it names exactly one.
pub(crate) fn member_of_certificate(der: &[u8]) -> Option<u64> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = certificate.subject_alternative_name().ok()??;
    let mut found = None;
    for name in &names.value.general_names {
        let x509_parser::extensions::GeneralName::DNSName(dns) = name else {
            continue;
        };
        let Some(id) = parse_member_name(dns) else {
            continue;
        };
        if found.is_some_and(|f| f != id) {
            return None;
        }
        found = Some(id);
    }
    found
}

fn parse_member_name(dns: &str) -> Option<u64> {
    let rest = dns.strip_prefix("member-")?;
    let (id, domain) = rest.split_once('.')?;
    if domain != MEMBER_DOMAIN {
        return None;
    }
    id.parse().ok().filter(|id| *id > 0)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl KeyPair {
    fn identity(&self) -> Result<Identity, TlsError> {
        Ok(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
    }
}

/// TLS on the client port: the server's certificate, and the CA that
/// signs the certificates clients must present (None: no client
/// certificate asked for).
#[derive(Debug, Clone)]
pub struct ClientPortTls {
    pub server: KeyPair,
    pub client_ca: Option<PathBuf>,
}

impl ClientPortTls {
    /// With `members_ca` (members use mutual TLS), a member may present
    /// its certificate here too: optional unless `client_ca` requires
    /// every client to present one (then either CA will do).
    pub fn server_config(&self, members_ca: Option<&Path>) -> Result<ServerTlsConfig, TlsError> {
        let config = ServerTlsConfig::new().identity(self.server.identity()?);
        let mut roots = Vec::new();
        if let Some(ca) = &self.client_ca {
            roots.extend(read(ca)?);
        }
        if let Some(ca) = members_ca {
            roots.push(b'\n');
            roots.extend(read(ca)?);
        }
        if roots.is_empty() {
            return Ok(config);
        }
        Ok(config
            .client_ca_root(Certificate::from_pem(roots))
            .client_auth_optional(self.client_ca.is_none()))
    }
}

/// Mutual TLS between members: this member's certificate (naming it, see
/// [`member_name`]), and the CA that signs every member's. Also what a
/// member presents, and trusts, when it calls another member's client
/// port (forwarding a write, joining, rebuilding).
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub member: KeyPair,
    pub ca: PathBuf,
}

impl PeerTls {
    /// The peer listener: a certificate from the members' CA required.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(self.member.identity()?)
            .client_ca_root(Certificate::from_pem(read(&self.ca)?)))
    }

    /// Calling member `to` on its peer listener: its certificate must name
    /// it.
    pub(crate) fn to_member(&self, to: u64) -> Result<ClientTlsConfig, TlsError> {
        Ok(self.to_client_port()?.domain_name(member_name(to)))
    }

    /// Calling a member's client port, checked by its host name.
    pub(crate) fn to_client_port(&self) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(self.member.identity()?))
    }
}

/// What a client (the CLI, the load harness) trusts and presents.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A client certificate, for servers that ask for one.
    pub identity: Option<KeyPair>,
}

impl ClientTls {
    pub fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca)?));
        let Some(identity) = &self.identity else {
            return Ok(config);
        };
        Ok(config.identity(identity.identity()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_parse_back_and_nothing_else_does() {
        assert_eq!(parse_member_name(&member_name(7)), Some(7));
        for other in [
            "member-0.stockraft",
            "member-x.stockraft",
            "member-7.example.com",
            "node-7.stockraft",
            "member-7",
        ] {
            assert_eq!(parse_member_name(other), None, "{other}");
        }
    }
}
