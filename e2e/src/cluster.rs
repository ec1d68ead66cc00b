//! [`Cluster`]: a master, volume servers, and optionally a filer, a broker and a schema
//! registry, as processes wired to each other, all under one temp dir that is removed when the
//! cluster is dropped.

use std::time::Duration;

use common::client::HttpClient;
use common::client::volume::BlobClient;

use crate::ServiceHandle;
use crate::secure::Secrets;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of volume servers.
    pub volumes: usize,
    /// Start a filer.
    pub filer: bool,
    /// Start a broker (implies a filer).
    pub broker: bool,
    /// Extra broker flags.
    pub broker_args: Vec<String>,
    /// Start a schema registry (`kelp-registry`) on the broker (needs `broker`).
    pub registry: bool,
    /// Extra environment for every service (e.g. OTLP settings).
    pub env: Vec<(String, String)>,
    /// Run with every protection on: fid tokens, cluster token, API keys and TLS, from
    /// credentials generated under the cluster's temp dir (see [`Cluster::secrets`]).
    pub secure: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            volumes: 1,
            filer: false,
            broker: false,
            broker_args: Vec::new(),
            registry: false,
            env: Vec::new(),
            secure: false,
        }
    }
}

impl ClusterOptions {
    /// One volume server, a filer and a broker started with `broker_args`.
    pub fn with_broker(broker_args: &[&str]) -> Self {
        Self {
            broker: true,
            broker_args: broker_args.iter().map(|a| (*a).to_owned()).collect(),
            ..Self::default()
        }
    }
}

impl ClusterOptions {
    /// One volume server, a filer, a broker and a schema registry.
    pub fn with_registry() -> Self {
        Self {
            broker: true,
            registry: true,
            ..Self::default()
        }
    }
}

/// Running services. Dropping it kills them all and removes the temp dir.
pub struct Cluster {
    /// The master.
    pub master: ServiceHandle,
    /// Volume servers.
    pub volumes: Vec<ServiceHandle>,
    /// The filer, if started.
    pub filer: Option<ServiceHandle>,
    /// The broker, if started.
    pub broker: Option<ServiceHandle>,
    /// The schema registry, if started.
    pub registry: Option<ServiceHandle>,
    /// The credentials, when started with [`ClusterOptions::secure`].
    pub secrets: Option<Secrets>,
    // Declared last: dropped after every process is reaped.
    tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts the services and waits until each is ready.
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new().prefix("kelp-e2e-").tempdir()?;
        let secrets = if opts.secure {
            Some(Secrets::generate(&tmp.path().join("secrets"))?)
        } else {
            None
        };
        let mut env = opts.env.clone();
        env.extend(secrets.iter().flat_map(Secrets::env));
        let with_env = |mut s: ServiceHandle| {
            for (k, v) in &env {
                s = s.env(k, v);
            }
            match &secrets {
                Some(sec) => s.tls(&sec.tls.ca),
                None => s,
            }
        };
        let mut master = with_env(ServiceHandle::new(
            tmp.path(),
            "master",
            "kelp-master",
            vec!["--pulse-ms".into(), "300".into()],
        ));
        master.start().await?;
        let maddr = master.addr().to_string();
        let mut volumes = Vec::new();
        for i in 0..opts.volumes {
            let mut v = with_env(ServiceHandle::new(
                tmp.path(),
                &format!("volume{i}"),
                "kelp-volume",
                vec![
                    "--master".into(),
                    maddr.clone(),
                    "--heartbeat-interval-ms".into(),
                    "200".into(),
                ],
            ));
            v.start().await?;
            volumes.push(v);
        }
        let mut cluster = Self {
            master,
            volumes,
            filer: None,
            broker: None,
            registry: None,
            secrets: secrets.clone(),
            tmp,
        };
        cluster.wait_volumes_registered(opts.volumes).await?;
        if opts.filer || opts.broker {
            let mut f = with_env(ServiceHandle::new(
                cluster.tmp.path(),
                "filer",
                "kelp-filer",
                vec!["--master".into(), maddr.clone()],
            ));
            f.start().await?;
            cluster.filer = Some(f);
        }
        if opts.broker {
            let faddr = cluster
                .filer
                .as_ref()
                .expect("filer started")
                .addr()
                .to_string();
            let mut args = vec!["--master".into(), maddr, "--filer".into(), faddr];
            // The Kafka listener defaults to 9092: off unless a test asks for it, so tests
            // running in parallel never compete for that port.
            if !opts.broker_args.iter().any(|a| a == "--kafka-port") {
                args.extend(["--kafka-port".into(), "0".into()]);
            }
            args.extend(opts.broker_args.iter().cloned());
            let mut b = with_env(ServiceHandle::new(
                cluster.tmp.path(),
                "broker",
                "kelp-broker",
                args,
            ));
            b.start().await?;
            cluster.broker = Some(b);
        }
        if opts.registry {
            let baddr = cluster.broker().addr().to_string();
            let mut r = with_env(ServiceHandle::new(
                cluster.tmp.path(),
                "registry",
                "kelp-registry",
                vec!["--broker".into(), baddr],
            ));
            r.start().await?;
            cluster.registry = Some(r);
        }
        Ok(cluster)
    }

    /// The temp dir holding every service's data and logs.
    pub fn root(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// A blob client of this cluster's master (with the write API key and TLS when secure).
    pub fn blob_client(&self) -> BlobClient {
        BlobClient::new(self.http_client(), &self.master.addr().to_string())
    }

    /// Kelp's traced client as the CLI builds it: for a secure cluster, TLS trusting its CA
    /// and the write API key.
    pub fn http_client(&self) -> HttpClient {
        match &self.secrets {
            Some(s) => s
                .kelp_client(Duration::from_secs(30))
                .expect("the generated CA loads"),
            None => HttpClient::new(Duration::from_secs(30)),
        }
    }

    /// A raw client for the harness's own checks: for a secure cluster it trusts the CA and
    /// sends the cluster token.
    pub fn admin_client(&self) -> reqwest::Client {
        match &self.secrets {
            Some(s) => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(
                    common::security::CLUSTER_TOKEN_HEADER,
                    s.cluster_token
                        .parse()
                        .expect("a hex token is a header value"),
                );
                crate::http_client_builder()
                    .use_preconfigured_tls(
                        common::tls::client_config(&s.tls.ca, None).expect("the CA loads"),
                    )
                    .default_headers(headers)
                    .build()
                    .expect("a client with a CA builds")
            }
            None => crate::http_client(),
        }
    }

    /// The credentials of a secure cluster.
    pub fn secrets(&self) -> &Secrets {
        self.secrets
            .as_ref()
            .expect("cluster started with secure: true")
    }

    /// Waits until the master sees `n` live volume servers.
    pub async fn wait_volumes_registered(&self, n: usize) -> anyhow::Result<()> {
        let client = self.admin_client();
        let url = format!("{}/cluster/status", self.master.url());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["alive_nodes"].as_u64() == Some(n as u64)
            {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "master never saw {n} live volume servers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The broker.
    pub fn broker(&mut self) -> &mut ServiceHandle {
        self.broker.as_mut().expect("cluster started with a broker")
    }

    /// Starts another broker `name` on this cluster's master and filer with `args` (the
    /// first broker keeps running): a standby or a member sharing the partitions, by `args`.
    pub async fn start_broker(
        &mut self,
        name: &str,
        args: &[&str],
    ) -> anyhow::Result<ServiceHandle> {
        let mut all = vec![
            "--master".to_owned(),
            self.master.addr().to_string(),
            "--filer".to_owned(),
            self.filer().addr().to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let mut b = ServiceHandle::new(self.root(), name, "kelp-broker", all);
        b.start().await?;
        Ok(b)
    }

    /// The schema registry.
    pub fn registry(&mut self) -> &mut ServiceHandle {
        self.registry
            .as_mut()
            .expect("cluster started with a registry")
    }

    /// SIGKILLs every service (the registry first, the master last), then starts them all
    /// again in dependency order on the same ports and data, each waited for until ready.
    pub async fn kill_all_and_restart(&mut self) -> anyhow::Result<()> {
        for s in [
            self.registry.as_mut(),
            self.broker.as_mut(),
            self.filer.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            s.kill();
        }
        for v in &mut self.volumes {
            v.kill();
        }
        self.master.kill();
        self.master.start().await?;
        for v in &mut self.volumes {
            v.start().await?;
        }
        self.wait_volumes_registered(self.volumes.len()).await?;
        for s in [
            self.filer.as_mut(),
            self.broker.as_mut(),
            self.registry.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            s.start().await?;
        }
        Ok(())
    }

    /// The filer.
    pub fn filer(&mut self) -> &mut ServiceHandle {
        self.filer.as_mut().expect("cluster started with a filer")
    }
}
