//! A test PKI made at test time: a CA, a server certificate for 127.0.0.1 and localhost,
//! and a client certificate, as PEM files, so that no key ever lives in the repository.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// The PEM files of the test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Writes a fresh CA, server and client certificate (and keys) into `dir`.
    pub fn create(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "topicrule test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let server = leaf(
            &ca,
            &ca_key,
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            &ca,
            &ca_key,
            "topicrule",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.0.pem()),
            server_key: write("server.key", server.1.serialize_pem()),
            client_cert: write("client.pem", client.0.pem()),
            client_key: write("client.key", client.1.serialize_pem()),
        }
    }
}

/// A certificate signed by the CA, for `name` (and 127.0.0.1), with its key.
fn leaf(
    ca: &Certificate,
    ca_key: &KeyPair,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    (cert, key)
}
