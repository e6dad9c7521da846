//! mTLS between mesh peers: every agent has a certificate whose DNS name (SAN) is its node name,
//! signed by the fleet's mesh CA. A watcher checks the owner's certificate against the owner's
//! node name (standard server-name check); an owner checks that the client certificate names
//! the watcher the subscription claims to come from, and refuses it otherwise.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::error::MeshError;

/// PEM files: the mesh CA, this node's certificate (SAN = node name) and its key.
#[derive(Clone, Debug)]
pub struct MeshTls {
    /// CA that signs every mesh peer's certificate.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

fn read(p: &Path) -> Result<Vec<u8>, MeshError> {
    std::fs::read(p).map_err(|source| MeshError::Read { path: p.to_owned(), source })
}

impl MeshTls {
    // The server side is `listener::ServerCerts`: it reloads these files without a restart.
    // The client side reads them for every new link, so a renewed certificate is used at once.

    /// Client side towards `owner`: its certificate must name `owner`; present ours.
    pub fn client_config(&self, owner: &str) -> Result<ClientTlsConfig, MeshError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(owner.to_owned()))
    }
}

/// Does the (already chain-verified) certificate name `node` (DNS SAN)?
pub fn cert_names_node(der: &CertificateDer<'_>, node: &str) -> bool {
    let Ok(name) = ServerName::try_from(node) else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else { return false };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}
