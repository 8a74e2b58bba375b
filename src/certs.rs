//! `stockraft certs`: a CA and the certificates a cluster runs TLS with,
//! in one step.
//!
//! One CA signs them all (`ca.pem`, its key `ca.key`): each member's
//! certificate (`member-ID.pem`, `member-ID.key`), which serves its client
//! port and its peer listener and names it (`member-ID.stockraft`, see
//! [`crate::tls::member_name`]) beside the hosts it is reached at, and a
//! certificate per client name (`client-NAME.pem`, `client-NAME.key`) for
//! servers that ask clients for one. Keys are written readable by their
//! owner only. The CA's key signs new members later (`--add`); keep it
//! off the servers.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use thiserror::Error;

use crate::tls::member_name;

/// How many years a member's or client's certificate is valid; the CA's
/// twice that.
pub(crate) const CERT_YEARS: i32 = 2;

#[derive(Debug, Error)]
pub enum CertsError {
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0:?} is not a usable host name or IP address in a certificate")]
    BadHost(String),
    #[error("{0:?} is not a client name (letters, digits, '-' and '_', 1 to 64)")]
    BadClientName(String),
    #[error("{dir} already holds a CA; pass --add to sign more with it, or use another --dir")]
    CaExists { dir: PathBuf },
    #[error("no CA in {dir} to sign with (ca.pem and ca.key); run without --add first")]
    NoCa { dir: PathBuf },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// What to make.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dir: PathBuf,
    /// Member ids to make certificates for.
    pub members: Vec<u64>,
    /// Host names and addresses in every member's certificate; `{id}` is
    /// replaced by the member's id (`stockraft-{id}`, say).
    pub hosts: Vec<String>,
    /// Names of client certificates to make.
    pub clients: Vec<String>,
    /// Sign with the CA already in `dir` instead of making one.
    pub add: bool,
}

/// Makes what `plan` asks for; returns the files written.
pub fn make(plan: &Plan) -> Result<Vec<PathBuf>, CertsError> {
    create_dir(&plan.dir)?;
    let mut written = Vec::new();
    let issuer = if plan.add {
        load_ca(&plan.dir)?
    } else {
        new_ca(&plan.dir, &mut written)?
    };
    for id in &plan.members {
        let mut names = vec![member_name(*id)];
        for host in &plan.hosts {
            names.push(host.replace("{id}", &id.to_string()));
        }
        let mut params = CertificateParams::new(names.clone())
            .map_err(|_| CertsError::BadHost(names.join(",")))?;
        params
            .distinguished_name
            .push(DnType::CommonName, member_name(*id));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf(
            &plan.dir,
            &format!("member-{id}"),
            params,
            &issuer,
            &mut written,
        )?;
    }
    for name in &plan.clients {
        check_client_name(name)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leaf(
            &plan.dir,
            &format!("client-{name}"),
            params,
            &issuer,
            &mut written,
        )?;
    }
    Ok(written)
}

fn check_client_name(name: &str) -> Result<(), CertsError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        return Ok(());
    }
    Err(CertsError::BadClientName(name.to_string()))
}

fn new_ca(dir: &Path, written: &mut Vec<PathBuf>) -> Result<Issuer<'static, KeyPair>, CertsError> {
    if dir.join("ca.key").exists() {
        return Err(CertsError::CaExists {
            dir: dir.to_path_buf(),
        });
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "stockraft cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 2 * CERT_YEARS);
    let cert = params.self_signed(&key)?;
    write(dir, "ca.pem", cert.pem().as_bytes(), false, written)?;
    write(dir, "ca.key", key.serialize_pem().as_bytes(), true, written)?;
    Ok(Issuer::new(params, key))
}

fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => CertsError::NoCa {
                dir: dir.to_path_buf(),
            },
            _ => CertsError::Read { path, error },
        })
    };
    let key = KeyPair::from_pem(&read("ca.key")?)?;
    Ok(Issuer::from_ca_cert_pem(&read("ca.pem")?, key)?)
}

fn leaf(
    dir: &Path,
    stem: &str,
    mut params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    written: &mut Vec<PathBuf>,
) -> Result<(), CertsError> {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    validity(&mut params, CERT_YEARS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write(
        dir,
        &format!("{stem}.pem"),
        cert.pem().as_bytes(),
        false,
        written,
    )?;
    write(
        dir,
        &format!("{stem}.key"),
        key.serialize_pem().as_bytes(),
        true,
        written,
    )
}

/// Valid from the start of this year for `years` years.
fn validity(params: &mut CertificateParams, years: i32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The year, to within a day: enough for a validity window.
    let year = 1970 + (now / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|error| CertsError::Write {
        path: dir.to_path_buf(),
        error,
    })
}

fn write(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    secret: bool,
    written: &mut Vec<PathBuf>,
) -> Result<(), CertsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let mode = if secret { 0o600 } else { 0o644 };
    let failed = |error| CertsError::Write {
        path: path.clone(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    written.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::member_of_certificate;

    fn der_of(path: &Path) -> Vec<u8> {
        let pem = std::fs::read(path).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        parsed.contents
    }

    #[test]
    fn member_certificates_name_their_member_and_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            dir: dir.path().to_path_buf(),
            members: vec![1, 2],
            hosts: vec!["127.0.0.1".into(), "stockraft-{id}".into()],
            clients: vec!["ops".into()],
            add: false,
        };
        let written = make(&plan).unwrap();
        assert_eq!(written.len(), 8);
        let der = der_of(&dir.path().join("member-2.pem"));
        assert_eq!(member_of_certificate(&der), Some(2));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = format!("{:?}", cert.subject_alternative_name().unwrap().unwrap());
        assert!(
            names.contains("stockraft-2") && names.contains("[127, 0, 0, 1]"),
            "{names}"
        );
        let client = der_of(&dir.path().join("client-ops.pem"));
        assert_eq!(member_of_certificate(&client), None);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("member-1.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A second run refuses to replace the CA; --add signs with it.
        assert!(matches!(make(&plan), Err(CertsError::CaExists { .. })));
        let more = Plan {
            members: vec![3],
            clients: Vec::new(),
            add: true,
            ..plan
        };
        assert_eq!(make(&more).unwrap().len(), 2);
        let der = der_of(&dir.path().join("member-3.pem"));
        assert_eq!(member_of_certificate(&der), Some(3));
    }
}
