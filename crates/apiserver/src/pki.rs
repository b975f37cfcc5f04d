//! The cluster's certificates: a CA, the API server's serving certificate and the admin's
//! client certificate, made on first start and reused after. Also the admin kubeconfig.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Error;

/// PEM files under `DATA_DIR/pki`.
pub struct Pki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
}

const CA_CN: &str = "rkube-ca";
/// The admin is in `system:masters`, the group Kubernetes grants everything.
const ADMIN_CN: &str = "rkube-admin";
const ADMIN_GROUP: &str = "system:masters";

impl Pki {
    /// Loads the PKI from `data_dir/pki`, or makes it if there is none. A partial PKI (some files
    /// missing) is an error, never silently replaced: clients may trust the old CA.
    pub fn load_or_create(data_dir: &Path, extra_sans: &[IpAddr]) -> Result<Pki, Error> {
        let dir = data_dir.join("pki");
        let files = ["ca.crt", "ca.key", "server.crt", "server.key", "admin.crt", "admin.key"].map(|f| dir.join(f));
        let present = files.iter().filter(|f| f.exists()).count();
        if present == files.len() {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| Error::Pki(format!("cannot read {}: {e}", p.display())))
            };
            return Ok(Pki {
                ca_cert: read(&files[0])?,
                server_cert: read(&files[2])?,
                server_key: read(&files[3])?,
                admin_cert: read(&files[4])?,
                admin_key: read(&files[5])?,
            });
        }
        if present > 0 {
            return Err(Error::Pki(format!(
                "{} holds only part of a PKI ({present} of {} files); restore it or remove the directory",
                dir.display(),
                files.len()
            )));
        }
        let (pki, ca_key) = create(extra_sans)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::Pki(format!("cannot create {}: {e}", dir.display())))?;
        for (path, content, secret) in [
            (&files[1], ca_key.as_str(), true),
            (&files[3], pki.server_key.as_str(), true),
            (&files[5], pki.admin_key.as_str(), true),
            (&files[2], pki.server_cert.as_str(), false),
            (&files[4], pki.admin_cert.as_str(), false),
            // The CA certificate last: its presence marks a complete PKI.
            (&files[0], pki.ca_cert.as_str(), false),
        ] {
            write_file(path, content.as_bytes(), secret)?;
        }
        Ok(pki)
    }

    /// The admin kubeconfig for a server at `server_url`.
    pub fn admin_kubeconfig(&self, server_url: &str) -> String {
        kubeconfig(server_url, &self.ca_cert, "rkube-admin", &self.admin_cert, &self.admin_key)
    }
}

/// A kubeconfig for `user` (a client certificate and key) at the server `server_url`, which
/// `ca` signed.
pub fn kubeconfig(server_url: &str, ca: &str, user: &str, cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: rkube
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: rkube
  context:
    cluster: rkube
    user: {user}
current-context: rkube
",
        ca = b64(ca),
        cert = b64(cert),
        key = b64(key),
    )
}

fn create(extra_sans: &[IpAddr]) -> Result<(Pki, String), Error> {
    let pki_error = |e: rcgen::Error| Error::Pki(format!("cannot make a certificate: {e}"));
    let now = time::OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate().map_err(pki_error)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name(CA_CN, None);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key).map_err(pki_error)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate().map_err(pki_error)?;
    let mut server = CertificateParams::default();
    server.distinguished_name = name("rkube-apiserver", None);
    let mut sans = vec![
        SanType::DnsName("localhost".try_into().map_err(pki_error)?),
        SanType::DnsName("kubernetes".try_into().map_err(pki_error)?),
        SanType::DnsName("kubernetes.default".try_into().map_err(pki_error)?),
        SanType::DnsName("kubernetes.default.svc".try_into().map_err(pki_error)?),
        SanType::DnsName("kubernetes.default.svc.cluster.local".try_into().map_err(pki_error)?),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname")
        && let Ok(dns) = host.trim().to_owned().try_into()
    {
        sans.push(SanType::DnsName(dns));
    }
    sans.extend(extra_sans.iter().filter(|ip| !ip.is_unspecified()).map(|ip| SanType::IpAddress(*ip)));
    server.subject_alt_names = sans;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.not_before = now - time::Duration::hours(1);
    server.not_after = now + time::Duration::days(3650);
    let server_cert = server.signed_by(&server_key, &issuer).map_err(pki_error)?;

    let admin_key = KeyPair::generate().map_err(pki_error)?;
    let mut admin = CertificateParams::default();
    admin.distinguished_name = name(ADMIN_CN, Some(ADMIN_GROUP));
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin.not_before = now - time::Duration::hours(1);
    admin.not_after = now + time::Duration::days(3650);
    let admin_cert = admin.signed_by(&admin_key, &issuer).map_err(pki_error)?;

    Ok((
        Pki {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
        },
        ca_key.serialize_pem(),
    ))
}

/// The identity the API server uses toward node agents (for logs, exec, port-forward), as
/// upstream's `--kubelet-client-certificate`.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// Loads `pki/NAME.crt` and `.key`, or issues them from the cluster CA when missing.
fn load_or_issue(
    data_dir: &Path,
    file: &str,
    params: impl FnOnce() -> Result<CertificateParams, Error>,
) -> Result<Issued, Error> {
    let dir = data_dir.join("pki");
    let (cert_path, key_path) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    if let (Ok(cert), Ok(key)) = (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path)) {
        return Ok(Issued { cert, key });
    }
    let pki_error = |e: rcgen::Error| Error::Pki(format!("cannot make a certificate: {e}"));
    let issuer = ca_issuer(data_dir)?;
    let key = KeyPair::generate().map_err(pki_error)?;
    let cert = valid_from_now(params()?).signed_by(&key, &issuer).map_err(pki_error)?;
    let issued = Issued { cert: cert.pem(), key: key.serialize_pem() };
    write_file(&key_path, issued.key.as_bytes(), true)?;
    write_file(&cert_path, issued.cert.as_bytes(), false)?;
    Ok(issued)
}

/// The cluster CA, to sign with.
fn ca_issuer(data_dir: &Path) -> Result<Issuer<'static, KeyPair>, Error> {
    let pki_error = |e: rcgen::Error| Error::Pki(format!("cannot load the cluster CA: {e}"));
    let dir = data_dir.join("pki");
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| Error::Pki(format!("cannot read {}: {e}", p.display())));
    let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?).map_err(pki_error)?;
    Issuer::from_ca_cert_pem(&read(dir.join("ca.crt"))?, ca_key).map_err(pki_error)
}

/// Issued certificates are valid from an hour ago (clock skew) for ten years.
fn valid_from_now(mut params: CertificateParams) -> CertificateParams {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

/// A client certificate: `cn` in `group`.
fn client_params(cn: &str, group: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn, Some(group));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

/// A node API's serving certificate: `system:node:NAME`, for the node's name and addresses.
fn node_serving_params(node: &str, ips: &[IpAddr]) -> Result<CertificateParams, Error> {
    let pki_error = |e: rcgen::Error| Error::Pki(format!("cannot make a certificate: {e}"));
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("system:node:{node}"), Some("system:nodes"));
    let mut sans = vec![SanType::DnsName(node.to_owned().try_into().map_err(pki_error)?)];
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    Ok(params)
}

/// The API server's client certificate toward node agents.
pub fn kubelet_client(data_dir: &Path) -> Result<Issued, Error> {
    load_or_issue(data_dir, "apiserver-kubelet-client", || Ok(client_params(KUBELET_CLIENT_CN, ADMIN_GROUP)))
}

/// The client certificate of the server's own node agent: `system:node:NAME` in
/// `system:nodes`, as a joined agent gets, never the admin's.
pub fn node_client(data_dir: &Path, node: &str) -> Result<Issued, Error> {
    load_or_issue(data_dir, &format!("node-client-{node}"), || {
        Ok(client_params(&format!("system:node:{node}"), "system:nodes"))
    })
}

/// A node agent's serving certificate for its node API, for the node's name and addresses;
/// reissued when they change.
pub fn node_serving(data_dir: &Path, node: &str, ips: &[IpAddr]) -> Result<Issued, Error> {
    let file = format!("node-{node}");
    let dir = data_dir.join("pki");
    let stamp_path = dir.join(format!("{file}.sans"));
    let stamp = format!("{node} {ips:?}");
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s != stamp) {
        let _ = std::fs::remove_file(dir.join(format!("{file}.crt")));
    }
    let issued = load_or_issue(data_dir, &file, || node_serving_params(node, ips))?;
    write_file(&stamp_path, stamp.as_bytes(), false)?;
    Ok(issued)
}

/// Signs a joining node's two certificate requests with the cluster CA: its client
/// certificate (`system:node:NAME` in `system:nodes`) and its node API's serving certificate
/// (the node's name and addresses). Only the requests' public keys are used; names come from
/// here. Returns (client, serving) certificates in PEM.
pub fn sign_node_requests(
    data_dir: &Path,
    node: &str,
    ips: &[IpAddr],
    client_csr: &str,
    serving_csr: &str,
) -> Result<(String, String), Error> {
    let pki_error = |e: rcgen::Error| Error::Pki(format!("cannot sign the node's request: {e}"));
    let issuer = ca_issuer(data_dir)?;
    let sign = |pem: &str, params: CertificateParams| -> Result<String, Error> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(pki_error)?;
        csr.params = valid_from_now(params);
        Ok(csr.signed_by(&issuer).map_err(pki_error)?.pem())
    };
    let client = client_params(&format!("system:node:{node}"), "system:nodes");
    Ok((sign(client_csr, client)?, sign(serving_csr, node_serving_params(node, ips)?)?))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// Writes a file atomically (temporary name, fsync, rename); secrets are readable by the owner only.
pub(crate) fn write_file(path: &Path, content: &[u8], secret: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| Error::Pki(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(content).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pki_is_made_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &[]).unwrap();
        let again = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(first.ca_cert, again.ca_cert);
        assert_eq!(first.admin_key, again.admin_key);
        let mode = std::fs::metadata(dir.path().join("pki/ca.key")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn node_certificates_are_issued_by_the_cluster_ca_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let client = kubelet_client(dir.path()).unwrap();
        assert_eq!(kubelet_client(dir.path()).unwrap().cert, client.cert);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let serving = node_serving(dir.path(), "node-a", &[ip]).unwrap();
        assert_eq!(node_serving(dir.path(), "node-a", &[ip]).unwrap().cert, serving.cert);
        let moved = node_serving(dir.path(), "node-a", &["192.0.2.10".parse().unwrap()]).unwrap();
        assert_ne!(moved.cert, serving.cert, "a new address gets a new certificate");
        let der = rustls_pemfile::certs(&mut moved.cert.as_bytes()).next().unwrap().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = rustls_pemfile::certs(&mut pki.ca_cert.as_bytes()).next().unwrap().unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
    }

    #[test]
    fn a_partial_pki_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_create(dir.path(), &[]).unwrap();
        std::fs::remove_file(dir.path().join("pki/server.key")).unwrap();
        let err = Pki::load_or_create(dir.path(), &[]).err().expect("refused");
        assert!(err.to_string().contains("only part of a PKI"), "{err}");
    }
}
