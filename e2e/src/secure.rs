//! [`Secrets`]: a cluster's generated credentials (fid-token keys, cluster token, API keys)
//! and development TLS files, the environment that turns them on in every service, and
//! clients that present them — or deliberately do not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::security::{FidKey, dev::DevSecrets};
use common::tls::dev::DevFiles;

/// Credentials and TLS files generated under a cluster's temp dir.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The credential files.
    pub files: DevSecrets,
    /// The TLS files.
    pub tls: DevFiles,
    /// The client API key with the write scope.
    pub write_key: String,
    /// The client API key with the read scope.
    pub read_key: String,
    /// The cluster token.
    pub cluster_token: String,
}

impl Secrets {
    /// Generates fresh credentials and a development CA + certificate into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        let files = common::security::dev::generate(dir, false)?;
        let tls = common::tls::dev::generate(dir, &[], false)?;
        let read = |p: &PathBuf| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
        Ok(Self {
            write_key: read(&files.write_api_key)?,
            read_key: read(&files.read_api_key)?,
            cluster_token: read(&files.cluster_token)?,
            files,
            tls,
        })
    }

    /// The environment that turns every protection on in a service.
    pub fn env(&self) -> Vec<(String, String)> {
        let p = |p: &PathBuf| p.display().to_string();
        vec![
            (
                "KELP_JWT_SIGNING_KEY_FILE".into(),
                p(&self.files.jwt_signing_key),
            ),
            (
                "KELP_CLUSTER_TOKEN_FILE".into(),
                p(&self.files.cluster_token),
            ),
            ("KELP_API_KEYS_FILE".into(), p(&self.files.api_keys)),
            ("KELP_TLS_CERT".into(), p(&self.tls.cert)),
            ("KELP_TLS_KEY".into(), p(&self.tls.key)),
            ("KELP_TLS_CA".into(), p(&self.tls.ca)),
        ]
    }

    /// The cluster's fid-token signing key (to mint tokens a test forges or lets expire).
    pub fn signing_key(&self) -> anyhow::Result<FidKey> {
        FidKey::from_file(&self.files.jwt_signing_key)
    }

    /// A raw client that trusts the cluster's CA and presents no credential.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        client_trusting(&self.tls.ca)
    }

    /// A raw client that trusts the cluster's CA and sends `Authorization: Bearer <key>`.
    pub fn client_with_key(&self, key: &str) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse()?,
        );
        Ok(builder_trusting(&self.tls.ca)?
            .default_headers(headers)
            .build()?)
    }

    /// Kelp's own traced client, as the CLI builds it with these credentials: TLS trusting
    /// the CA and the write API key.
    pub fn kelp_client(&self, timeout: Duration) -> anyhow::Result<common::client::HttpClient> {
        let http = common::client::HttpClient::new(timeout)
            .with_tls(common::tls::client_config(&self.tls.ca, None)?)
            .with_default_header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", self.write_key).parse()?,
            );
        Ok(http)
    }
}

fn builder_trusting(ca: &Path) -> anyhow::Result<reqwest::ClientBuilder> {
    let cfg = common::tls::client_config(ca, None)?;
    Ok(crate::http_client_builder()
        .timeout(Duration::from_secs(30))
        .use_preconfigured_tls(cfg))
}

/// A raw client trusting only the CA in `ca`.
pub fn client_trusting(ca: &Path) -> anyhow::Result<reqwest::Client> {
    Ok(builder_trusting(ca)?.build()?)
}
