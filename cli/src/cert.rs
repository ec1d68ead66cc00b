//! `kelp cert`: a development CA, a certificate and the credentials (fid-token keys, cluster
//! token, client API keys) for a secured cluster, written into one directory, and the client
//! side of them: [`ClientAuth`], the flags with which the client commands present an API key
//! or the cluster token and trust a CA.

use std::path::PathBuf;

use anyhow::Context;
use axum::http::{HeaderValue, header};
use clap::Args;
use common::client::HttpClient;
use common::security::{CLUSTER_TOKEN_HEADER, Secret};

/// Arguments of `kelp cert`.
#[derive(Debug, Clone, Args)]
pub struct CertArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Another name or IP address the certificate must be valid for (repeatable); localhost,
    /// 127.0.0.1 and the compose service names are always included.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
}

/// Writes the development CA, certificate and credentials, and prints how to use them.
pub fn run(a: CertArgs) -> anyhow::Result<()> {
    let tls = common::tls::dev::generate(&a.out, &a.hosts, a.force)?;
    let sec = common::security::dev::generate(&a.out, a.force)?;
    let p = |p: &PathBuf| p.display().to_string();
    println!(
        "wrote a development CA, a certificate and credentials to {}",
        a.out.display()
    );
    println!("run a secured server with:");
    println!(
        "  kelp server --tls-cert {} --tls-key {} --tls-ca {} \\\n    --jwt-signing-key-file {} --cluster-token-file {} --api-keys-file {}",
        p(&tls.cert),
        p(&tls.key),
        p(&tls.ca),
        p(&sec.jwt_signing_key),
        p(&sec.cluster_token),
        p(&sec.api_keys)
    );
    println!("and call it with:");
    println!(
        "  kelp --tls-ca {} --api-key-file {} upload <file>",
        p(&tls.ca),
        p(&sec.write_api_key)
    );
    println!(
        "  (read-only key: {}; operator commands such as `fs ls` add --cluster-token-file {})",
        p(&sec.read_api_key),
        p(&sec.cluster_token)
    );
    Ok(())
}

/// How the client commands authenticate to a secured cluster (each also from `KELP_*`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClientAuth {
    /// File holding the API key to send (`Authorization: Bearer <key>`).
    #[arg(long, env = "KELP_API_KEY_FILE", conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,
    /// The API key to send (prefer `KELP_API_KEY` or a file: a flag shows in `ps`).
    #[arg(long, env = "KELP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// File holding the cluster token, for operator routes (`fs ls`, `topic locate`, the
    /// benchmarks' flushes).
    #[arg(long, env = "KELP_CLUSTER_TOKEN_FILE")]
    cluster_token_file: Option<PathBuf>,
    /// CA (PEM) to trust: with it every call uses `https://`.
    #[arg(long, env = "KELP_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl ClientAuth {
    /// The CA to trust (`--tls-ca`), if any.
    pub fn tls_ca(&self) -> Option<&std::path::Path> {
        self.tls_ca.as_deref()
    }

    /// `http` presenting these credentials.
    pub fn apply(&self, http: HttpClient) -> anyhow::Result<HttpClient> {
        let mut http = http;
        let key = match (&self.api_key_file, &self.api_key) {
            (Some(file), _) => Some(
                Secret::from_file(file)
                    .with_context(|| format!("read the API key from {}", file.display()))?
                    .expose()
                    .to_vec(),
            ),
            (None, Some(key)) => Some(key.trim().as_bytes().to_vec()),
            (None, None) => None,
        };
        if let Some(key) = key {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(&key);
            let value = HeaderValue::from_bytes(&value).context("the API key must be printable")?;
            http = http.with_default_header(header::AUTHORIZATION, value);
        }
        if let Some(file) = &self.cluster_token_file {
            let token = Secret::from_file(file)?;
            let value = HeaderValue::from_bytes(token.expose())
                .context("the cluster token must be printable")?;
            http = http.with_default_header(CLUSTER_TOKEN_HEADER, value);
        }
        if let Some(ca) = &self.tls_ca {
            http = http.with_tls(common::tls::client_config(ca, None)?);
        }
        Ok(http)
    }
}
