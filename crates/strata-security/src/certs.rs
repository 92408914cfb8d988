//! Certificates for a local deployment: one CA, a server certificate for the names clients
//! dial, and one certificate per client (for mutual TLS). ECDSA P-256 keys, made with rcgen.
//!
//! This is a small private PKI for a lab or a test, not a replacement for an organization's
//! CA: there is no revocation list (revoke a client with its token instead).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::files::{Access, write_new};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The CA outlives the certificates it signs, so they can be re-issued without re-distributing it.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// The names a server certificate covers when none are given.
pub const DEFAULT_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key by accident.
        f.debug_struct("CertAndKey").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A CA and the certificates it signed.
#[derive(Debug, Clone)]
pub struct LocalPki {
    pub ca: CertAndKey,
    pub server: CertAndKey,
    pub clients: Vec<CertAndKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make the {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("server name `{name}` is neither a DNS name nor an IP address")]
    ServerName { name: String },
    #[error("a server certificate needs at least one name")]
    NoServerName,
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} exists: refusing to overwrite it (write into an empty directory)")]
    Exists { path: PathBuf },
}

/// Makes a CA, a server certificate for `server_names` (DNS names or IP addresses) and
/// `clients` client certificates.
pub fn generate(server_names: &[String], clients: usize) -> Result<LocalPki, CertError> {
    if server_names.is_empty() {
        return Err(CertError::NoServerName);
    }
    let now = SystemTime::now();
    let gen_err = |what: &str| {
        let what = what.to_string();
        move |source| CertError::Generate { what, source }
    };

    let mut ca_params = CertificateParams::default();
    // A name of its own: two CAs with one name make TLS errors about the wrong one.
    let ca_name = format!("Strata local CA {:08x}", rand::random::<u32>());
    ca_params.distinguished_name.push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params, now, CA_VALIDITY);
    let ca_key = KeyPair::generate().map_err(gen_err("CA key"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(gen_err("CA certificate"))?;

    let mut server_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("server certificate"))?;
    for name in server_names {
        // rcgen takes any ASCII as a DNS name; clients will not, so refuse it here.
        let bad = || CertError::ServerName { name: name.clone() };
        rustls_pki_types::ServerName::try_from(name.as_str()).map_err(|_| bad())?;
        let san = CertificateParams::new(vec![name.clone()]).map_err(|_| bad())?.subject_alt_names;
        server_params.subject_alt_names.extend(san);
    }
    server_params.distinguished_name.push(DnType::CommonName, server_names[0].as_str());
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = leaf(server_params, &ca, now, "server")?;

    let clients = (0..clients)
        .map(|i| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, format!("strata-client-{i}"));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            leaf(params, &ca, now, &format!("client {i}"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(LocalPki { ca: CertAndKey { cert_pem: ca.pem(), key_pem: ca_key_pem }, server, clients })
}

fn leaf(
    mut params: CertificateParams,
    ca: &CertifiedIssuer<'_, KeyPair>,
    now: SystemTime,
    what: &str,
) -> Result<CertAndKey, CertError> {
    let err = |source| CertError::Generate { what: format!("{what} certificate"), source };
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, LEAF_VALIDITY);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, ca).map_err(err)?;
    Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Valid from a day ago (clocks of a deployment's machines disagree a little) for `validity`.
fn set_validity(params: &mut CertificateParams, now: SystemTime, validity: Duration) {
    params.not_before = (now - DAY).into();
    params.not_after = (now + validity).into();
}

impl LocalPki {
    /// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key`, `client-<i>.pem` and
    /// `client-<i>.key` into `dir` (created if missing). Keys are 0600. Nothing is
    /// overwritten: an existing file is an error, before anything is written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, CertError> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.to_path_buf(), source })?;
        let mut files = vec![("ca", &self.ca), ("server", &self.server)];
        let client_names: Vec<String> = (0..self.clients.len()).map(|i| format!("client-{i}")).collect();
        files.extend(client_names.iter().map(String::as_str).zip(&self.clients));
        let mut planned = Vec::new();
        for (name, pair) in files {
            planned.push((dir.join(format!("{name}.pem")), pair.cert_pem.as_str(), Access::Public));
            planned.push((dir.join(format!("{name}.key")), pair.key_pem.as_str(), Access::OwnerOnly));
        }
        if let Some((path, _, _)) = planned.iter().find(|(path, _, _)| path.exists()) {
            return Err(CertError::Exists { path: path.clone() });
        }
        for (path, text, access) in &planned {
            write_new(path, text.as_bytes(), *access)
                .map_err(|source| CertError::Write { path: path.clone(), source })?;
        }
        Ok(planned.into_iter().map(|(path, _, _)| path).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn makes_a_ca_a_server_and_clients() {
        let pki = generate(&names(&DEFAULT_SERVER_NAMES), 2).unwrap();
        assert_eq!(pki.clients.len(), 2);
        for pair in [&pki.ca, &pki.server, &pki.clients[0], &pki.clients[1]] {
            assert!(pair.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(pair.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert!(!format!("{pair:?}").contains("PRIVATE KEY"));
        }
        assert_ne!(pki.clients[0].key_pem, pki.clients[1].key_pem);
    }

    #[test]
    fn bad_server_names_are_named() {
        let err = generate(&names(&["localhost", "bad name!"]), 0).unwrap_err().to_string();
        assert!(err.contains("bad name!"), "{err}");
        assert!(matches!(generate(&[], 0), Err(CertError::NoServerName)));
    }

    #[test]
    fn writes_files_with_private_keys_owner_only_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let pki = generate(&names(&["strata.example", "10.0.0.7"]), 1).unwrap();
        let written = pki.write(&out).unwrap();
        let mut listed: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        listed.sort();
        assert_eq!(listed, ["ca.key", "ca.pem", "client-0.key", "client-0.pem", "server.key", "server.pem"]);
        #[cfg(unix)]
        for path in &written {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let key = path.extension().is_some_and(|e| e == "key");
            assert_eq!(mode, if key { 0o600 } else { 0o644 }, "{}", path.display());
        }
        let ca_before = std::fs::read(out.join("ca.key")).unwrap();
        let err = generate(&names(&["localhost"]), 1).unwrap().write(&out).unwrap_err().to_string();
        assert!(err.contains("ca.pem") && err.contains("overwrite"), "{err}");
        assert_eq!(std::fs::read(out.join("ca.key")).unwrap(), ca_before);
    }
}
