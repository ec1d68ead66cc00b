//! TLS for Kelp's HTTP servers and its one HTTP client: rustls with the ring provider, handed
//! explicitly to every configuration (never a process default, never aws-lc).
//!
//! [`server_config`] loads a PEM certificate chain and key and, given a client CA, requires and
//! verifies client certificates (mutual TLS). [`client_config`] trusts exactly one CA and may
//! present a client certificate. [`dev::generate`] writes a development CA and one certificate
//! signed by it, valid both as a server and a client certificate (`kelp cert`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The one crypto provider Kelp uses: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide rustls provider, if none is installed yet.
///
/// Kelp's own configurations name their provider explicitly; this is for code that builds a
/// TLS-capable reqwest client without one (reqwest's `rustls-no-provider` feature panics when
/// no process default exists). Calling it more than once is harmless.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: some provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A server configuration from PEM files: the certificate chain `cert` (leaf first) and its
/// private key `key`. With `client_ca`, every client must present a certificate signed by that
/// CA; without it, no client certificate is asked for. ALPN offers `h2` and `http/1.1`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider();
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choose the tls protocol versions")?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("build the client verifier for {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key_der).with_context(|| {
        format!(
            "use the key {} with the certificate {}",
            key.display(),
            cert.display()
        )
    })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration that trusts only the CA in the PEM file `ca` and, with `identity`
/// (`(cert, key)` PEM files), presents that client certificate. ALPN offers `http/1.1`, the one
/// protocol Kelp's client speaks.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> anyhow::Result<ClientConfig> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("choose the tls protocol versions")?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .with_context(|| {
                format!(
                    "use the client key {} with the certificate {}",
                    key.display(),
                    cert.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse certificates in {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("read a private key from {}", path.display()))
}

fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("trust the ca certificate in {}", path.display()))?;
    }
    Ok(roots)
}

pub mod dev {
    //! A development CA and one certificate signed by it, for `kelp cert`, compose files and
    //! tests. Not for production: the CA key sits next to the certificates.

    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use anyhow::Context;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    /// Names every generated certificate is valid for, besides the hosts asked for: the local
    /// machine and the compose service names.
    pub const DEFAULT_HOSTS: &[&str] = &[
        "localhost",
        "127.0.0.1",
        "master",
        "volume",
        "volume2",
        "filer",
        "broker",
        "registry",
    ];

    /// The files [`generate`] wrote.
    #[derive(Debug, Clone)]
    pub struct DevFiles {
        /// The CA certificate (`ca.pem`): what servers and clients trust.
        pub ca: PathBuf,
        /// The CA private key (`ca-key.pem`, mode 0600).
        pub ca_key: PathBuf,
        /// The server and client certificate (`cert.pem`).
        pub cert: PathBuf,
        /// Its private key (`key.pem`, mode 0600).
        pub key: PathBuf,
    }

    /// Writes a development CA (`ca.pem`, `ca-key.pem`) and a certificate signed by it
    /// (`cert.pem`, `key.pem`) into `out`, creating the directory. The certificate's names are
    /// `hosts` plus [`DEFAULT_HOSTS`] (IP addresses become IP names); it is valid for both
    /// server and client authentication, so it also serves mutual TLS. Key files get mode 0600.
    /// Existing files are refused unless `force`.
    pub fn generate(out: &Path, hosts: &[String], force: bool) -> anyhow::Result<DevFiles> {
        let files = DevFiles {
            ca: out.join("ca.pem"),
            ca_key: out.join("ca-key.pem"),
            cert: out.join("cert.pem"),
            key: out.join("key.pem"),
        };
        if !force {
            for path in [&files.ca, &files.ca_key, &files.cert, &files.key] {
                if path.exists() {
                    anyhow::bail!(
                        "{} exists: refusing to overwrite it (use --force)",
                        path.display()
                    );
                }
            }
        }
        std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;

        let ca_key = KeyPair::generate().context("generate the ca key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("ca params")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kelp development ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem_key = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("sign the ca")?;

        let mut names: Vec<String> = Vec::new();
        for host in hosts
            .iter()
            .map(String::as_str)
            .chain(DEFAULT_HOSTS.iter().copied())
        {
            if !names.iter().any(|n| n == host) {
                names.push(host.to_owned());
            }
        }
        let key = KeyPair::generate().context("generate the certificate key")?;
        let mut params = CertificateParams::new(names.clone())
            .with_context(|| format!("use the names {names:?}"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &ca)
            .context("sign the certificate")?;

        write(&files.ca, ca.pem().as_bytes(), 0o644, force)?;
        write(&files.ca_key, ca_pem_key.as_bytes(), 0o600, force)?;
        write(&files.cert, cert.pem().as_bytes(), 0o644, force)?;
        write(&files.key, key.serialize_pem().as_bytes(), 0o600, force)?;
        Ok(files)
    }

    fn write(path: &Path, body: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).mode(mode);
        if force {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut file = opts
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        // The mode given to `open` only applies to a new file: an overwritten one gets it here.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("set the mode of {}", path.display()))?;
        file.write_all(body)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// Runs one TLS handshake over an in-memory pipe and exchanges a byte; returns the server's
    /// and the client's outcome.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: ClientConfig,
    ) -> (anyhow::Result<()>, anyhow::Result<()>) {
        let (a, b) = tokio::io::duplex(64 << 10);
        let acceptor = TlsAcceptor::from(server);
        let connector = TlsConnector::from(Arc::new(client));
        let server = async move {
            let mut s = acceptor.accept(a).await?;
            let mut buf = [0u8; 1];
            s.read_exact(&mut buf).await?;
            s.write_all(&buf).await?;
            s.flush().await?;
            anyhow::Ok(())
        };
        let client = async move {
            let name = rustls_pki_types::ServerName::try_from("localhost")?;
            let mut c = connector.connect(name, b).await?;
            c.write_all(b"x").await?;
            c.flush().await?;
            let mut buf = [0u8; 1];
            c.read_exact(&mut buf).await?;
            anyhow::Ok(())
        };
        let (s, c) = tokio::join!(
            tokio::time::timeout(std::time::Duration::from_secs(5), server),
            tokio::time::timeout(std::time::Duration::from_secs(5), client)
        );
        (
            s.unwrap_or_else(|e| Err(e.into())),
            c.unwrap_or_else(|e| Err(e.into())),
        )
    }

    #[tokio::test]
    async fn test_tls_generated_files_make_a_working_server_and_client() {
        let dir = tempfile::tempdir().unwrap();
        let f = dev::generate(dir.path(), &["kelp.test".to_owned()], false).unwrap();
        let server = server_config(&f.cert, &f.key, None).unwrap();
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let client = client_config(&f.ca, None).unwrap();
        let (s, c) = handshake(server, client).await;
        s.unwrap();
        c.unwrap();
    }

    #[tokio::test]
    async fn test_tls_client_refuses_a_server_of_another_ca() {
        let one = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let f1 = dev::generate(one.path(), &[], false).unwrap();
        let f2 = dev::generate(other.path(), &[], false).unwrap();
        let server = server_config(&f1.cert, &f1.key, None).unwrap();
        let client = client_config(&f2.ca, None).unwrap();
        let (_, c) = handshake(server, client).await;
        let err = format!("{:#}", c.unwrap_err());
        // Both development CAs share a subject name, so webpki finds an issuer by name and
        // the signature check fails; a CA of another name gives UnknownIssuer.
        assert!(
            err.contains("BadSignature") || err.contains("UnknownIssuer"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn test_tls_mutual_auth_requires_a_client_certificate_of_the_ca() {
        let one = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let f1 = dev::generate(one.path(), &[], false).unwrap();
        let f2 = dev::generate(other.path(), &[], false).unwrap();
        let server = server_config(&f1.cert, &f1.key, Some(&f1.ca)).unwrap();

        // The right client certificate: accepted.
        let good = client_config(&f1.ca, Some((&f1.cert, &f1.key))).unwrap();
        let (s, c) = handshake(server.clone(), good).await;
        s.unwrap();
        c.unwrap();

        // No client certificate: refused by the server.
        let none = client_config(&f1.ca, None).unwrap();
        let (s, _) = handshake(server.clone(), none).await;
        assert!(s.is_err());

        // A client certificate of another CA: refused by the server.
        let wrong = client_config(&f1.ca, Some((&f2.cert, &f2.key))).unwrap();
        let (s, _) = handshake(server, wrong).await;
        let err = format!("{:#}", s.unwrap_err());
        // Both development CAs share a subject name, so webpki finds an issuer by name and
        // the signature check fails; a CA of another name gives UnknownIssuer.
        assert!(
            err.contains("BadSignature") || err.contains("UnknownIssuer"),
            "{err}"
        );
    }

    #[test]
    fn test_tls_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = format!("{:#}", server_config(&missing, &missing, None).unwrap_err());
        assert!(err.contains("nope.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = format!("{:#}", client_config(&empty, None).unwrap_err());
        assert!(
            err.contains("no certificate in") && err.contains("empty.pem"),
            "{err}"
        );

        let f = dev::generate(dir.path(), &[], false).unwrap();
        // A certificate file given as the key: the error names it.
        let err = format!("{:#}", server_config(&f.cert, &f.cert, None).unwrap_err());
        assert!(err.contains("cert.pem"), "{err}");
    }

    #[test]
    fn test_dev_generate_protects_keys_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let f = dev::generate(dir.path(), &["10.0.0.7".to_owned()], false).unwrap();
        for key in [&f.key, &f.ca_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let before = std::fs::read(&f.cert).unwrap();
        let err = format!("{:#}", dev::generate(dir.path(), &[], false).unwrap_err());
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read(&f.cert).unwrap(), before);

        std::fs::set_permissions(&f.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        dev::generate(dir.path(), &[], true).unwrap();
        assert_ne!(std::fs::read(&f.cert).unwrap(), before);
        let mode = std::fs::metadata(&f.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
