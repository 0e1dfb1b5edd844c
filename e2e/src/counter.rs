use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use counter_api::{Audit, LatestHits, PageStats, PagesOverview, Summary, paths};
use tokio::process::Command;
use tokio::sync::OwnedMutexGuard;

use crate::{Artifacts, Backend, Process, http_client};

/// How the counter's web tier is served by wasmtime everywhere (scripts/start, the
/// tests, the benchmark, the test images): as a WASIp3 component, whose instances
/// serve up to 128 requests, 16 at once, as under Spin 4, with the pooling
/// allocator keeping a little memory resident between instances instead of
/// unmapping it (see "Performance" in the README).
pub const WASMTIME_SERVE_FLAGS: [&str; 5] = [
    "-Wcomponent-model-async",
    "-Sp3",
    "-Scli",
    "-Opooling-memory-keep-resident=262144",
    "-Opooling-table-keep-resident=65536",
];

/// The environment `spin up` runs with everywhere (scripts/start, the tests, the
/// benchmark, the web image): one Tokio worker thread. Spin 4.0.2 hands a WASIp3
/// response to its HTTP server before the body has crossed from the instance,
/// and on a second worker thread the server often finds the body not there yet,
/// writes the head alone, and the body then waits for the client's delayed ACK
/// behind Nagle's algorithm (Spin sets no `TCP_NODELAY`): 40 ms. On one thread
/// the server runs only once the instance has handed the body over, so head and
/// body leave in one write (see "The web component" in the README).
pub const SPIN_ENV: [(&str, &str); 1] = [("TOKIO_WORKER_THREADS", "1")];

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// The gateway binary, on the backend's store.
pub struct Gateway {
    pub url: String,
    port: u16,
    backend: Backend,
    data_dir: PathBuf,
    log_dir: PathBuf,
    env: Vec<(String, String)>,
    process: Option<Process>,
}

impl Gateway {
    pub async fn start(backend: Backend, data_dir: &Path, log_dir: &Path) -> Gateway {
        Self::start_with(backend, data_dir, log_dir, &[]).await
    }

    /// With extra environment, e.g. `MAX_BATCH`.
    pub async fn start_with(
        backend: Backend,
        data_dir: &Path,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Gateway {
        let mut gateway = Self::start_alive(backend, data_dir, log_dir, env).await;
        wait_until_ok(
            &format!("{}{}", gateway.url, paths::READYZ),
            gateway.process.as_mut().expect("started"),
        )
        .await;
        gateway
    }

    /// Starts the gateway (again) on the same port and store, and waits until ready.
    pub async fn restart(&mut self) {
        self.spawn(paths::READYZ).await;
    }

    /// Like [`Gateway::start_with`], but waits only until the process answers, not
    /// until its store is usable.
    pub async fn start_alive(
        backend: Backend,
        data_dir: &Path,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Gateway {
        let port = free_port();
        let mut gateway = Gateway {
            url: format!("http://127.0.0.1:{port}"),
            port,
            backend,
            data_dir: data_dir.to_owned(),
            log_dir: log_dir.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            process: None,
        };
        gateway.spawn(paths::HEALTHZ).await;
        gateway
    }

    async fn spawn(&mut self, wait_for: &str) {
        assert!(self.process.is_none(), "the gateway is already running");
        let mut command = Command::new(&Artifacts::get().gateway_bin);
        command
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("DATA_DIR", &self.data_dir)
            .env("RUST_LOG", "info")
            .env_remove("AEROSPIKE_HOST")
            .env_remove("AEROSPIKE_HOSTS");
        if self.backend == Backend::Aerospike {
            let own_hosts = self.env.iter().any(|(k, _)| k == "AEROSPIKE_HOSTS");
            let hosts = Backend::aerospike_hosts();
            assert!(own_hosts || hosts.is_some(), "AEROSPIKE_HOSTS is set");
            if let Some(hosts) = hosts {
                command.env("AEROSPIKE_HOSTS", hosts);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut process = Process::spawn("gateway", command, &self.log_dir);
        wait_until_ok(&format!("{}{wait_for}", self.url), &mut process).await;
        self.process = Some(process);
    }

    /// SIGTERM: the gateway finishes what is in flight and exits 0.
    pub async fn stop(&mut self) {
        self.process
            .take()
            .expect("the gateway is running")
            .stop()
            .await;
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        self.process
            .take()
            .expect("the gateway is running")
            .kill()
            .await;
    }

    pub fn pid(&self) -> i32 {
        self.process
            .as_ref()
            .expect("the gateway is running")
            .pid()
            .as_raw()
    }

    pub async fn summary(&self) -> Summary {
        get_json(&format!("{}{}", self.url, paths::SUMMARY)).await
    }

    pub async fn latest_hits(&self, limit: usize) -> LatestHits {
        get_json(&format!("{}{}?limit={limit}", self.url, paths::LATEST_HITS)).await
    }

    /// `GET /v1/pages/<key>?days=D`: one named counter, its last `days` days.
    pub async fn page_stats(&self, key: &str, days: u32) -> PageStats {
        get_json(&format!("{}{}/{key}?days={days}", self.url, paths::PAGES)).await
    }

    /// `GET /v1/pages?days=D`: the top counters and all counters' hits per day.
    pub async fn pages_overview(&self, days: u32) -> PagesOverview {
        get_json(&format!("{}{}?days={days}", self.url, paths::PAGES)).await
    }

    pub async fn audit(&self) -> Audit {
        get_json(&format!("{}{}", self.url, paths::AUDIT)).await
    }

    /// The audit once it is consistent: what a killed gateway left half done on
    /// a shared cluster (an earlier test's, or this one's) is finished by the
    /// sweepers, with nobody acting, within seconds. Panics with the last audit
    /// if that takes over a minute.
    pub async fn settled_audit(&self) -> Audit {
        let started = Instant::now();
        loop {
            let audit = self.audit().await;
            if audit.consistent {
                return audit;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the store did not become consistent within 60 s: {audit:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("gateway.log")).unwrap_or_default()
    }
}

/// The Wasm runtime that serves the web component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `wasmtime serve`, pinned by the scripts: the runtime every test has.
    Wasmtime,
    /// `spin up`, the runtime users run, when `SPIN` names a Spin CLI.
    Spin,
}

/// Which store and which runtime a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub backend: Backend,
    pub runtime: Runtime,
}

impl From<Backend> for Setup {
    fn from(backend: Backend) -> Self {
        Setup {
            backend,
            runtime: Runtime::Wasmtime,
        }
    }
}

/// The web component served by `wasmtime serve` or `spin up`.
pub struct Web {
    pub url: String,
    pub server_id: String,
    process: Process,
}

impl Web {
    pub async fn start(
        gateway_url: &str,
        server_id: &str,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Web {
        Self::start_on(Runtime::Wasmtime, gateway_url, server_id, log_dir, env).await
    }

    pub async fn start_on(
        runtime: Runtime,
        gateway_url: &str,
        server_id: &str,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Web {
        let component = &Artifacts::get().component;
        Self::serve_on(runtime, component, gateway_url, server_id, log_dir, env).await
    }

    /// Serves any component the same way, e.g. the benchmark's static page.
    pub async fn serve(
        component: &Path,
        gateway_url: &str,
        server_id: &str,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Web {
        Self::serve_on(
            Runtime::Wasmtime,
            component,
            gateway_url,
            server_id,
            log_dir,
            env,
        )
        .await
    }

    pub async fn serve_on(
        runtime: Runtime,
        component: &Path,
        gateway_url: &str,
        server_id: &str,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Web {
        Self::serve_with(
            runtime,
            component,
            gateway_url,
            server_id,
            log_dir,
            env,
            &[],
        )
        .await
    }

    /// [`Web::serve_on`], with `runtime_env` in the runtime's own environment
    /// (`env` goes to the component), e.g. Spin's `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub async fn serve_with(
        runtime: Runtime,
        component: &Path,
        gateway_url: &str,
        server_id: &str,
        log_dir: &Path,
        env: &[(&str, &str)],
        runtime_env: &[(&str, &str)],
    ) -> Web {
        let port = crate::free_port();
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.extend([("GATEWAY_URL", gateway_url), ("SERVER_ID", server_id)]);
        let mut command = match runtime {
            Runtime::Wasmtime => {
                let mut command = Command::new(&Artifacts::get().wasmtime);
                command
                    .arg("serve")
                    .args(WASMTIME_SERVE_FLAGS)
                    .arg(format!("--addr=127.0.0.1:{port}"));
                command
            }
            Runtime::Spin => {
                let manifest = spin_manifest(component, &log_dir.join(format!("spin-{server_id}")));
                let spin = Artifacts::get()
                    .spin
                    .as_ref()
                    .expect("SPIN names a Spin CLI for the Spin runs");
                let mut command = Command::new(spin);
                command
                    .envs(SPIN_ENV)
                    .arg("up")
                    .arg("--from")
                    .arg(&manifest)
                    .arg(format!("--listen=127.0.0.1:{port}"));
                command
            }
        };
        command.envs(runtime_env.iter().copied());
        for (key, value) in env {
            command.arg(format!("--env={key}={value}"));
        }
        if runtime == Runtime::Wasmtime {
            command.arg(component);
        }
        let mut process = Process::spawn(&format!("web-{server_id}"), command, log_dir);
        let url = format!("http://127.0.0.1:{port}");
        wait_until_ok(&format!("{url}/healthz"), &mut process).await;
        Web {
            url,
            server_id: server_id.to_owned(),
            process,
        }
    }

    pub async fn stop(self) {
        self.process.kill().await;
    }

    pub fn pid(&self) -> i32 {
        self.process.pid().as_raw()
    }

    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }
}

/// A manifest like the repository's `spin.toml`, in `dir`, for `component`
/// wherever it was built: what `spin up` runs in the tests.
fn spin_manifest(component: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("a directory for the Spin manifest");
    let manifest = dir.join("spin.toml");
    let source = component
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", component.display()));
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n\n[application]\nname = \"awesome-counter\"\n\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"counter\"\n\n\
             [component.counter]\nsource = {source:?}\n\
             allowed_outbound_hosts = [\"http://*:*\", \"https://*:*\"]\n"
        ),
    )
    .expect("writing the Spin manifest");
    manifest
}

/// The whole counter: a gateway and `replicas` web components in front of it.
pub struct Counter {
    pub setup: Setup,
    pub gateway: Gateway,
    pub webs: Vec<Web>,
    /// The totals before the test: zero on a fresh embedded store, whatever the
    /// shared Aerospike cluster already counted otherwise.
    pub baseline: Summary,
    pub dir: tempfile::TempDir,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Counter {
    pub async fn start(setup: impl Into<Setup>, replicas: usize) -> Counter {
        Self::start_with(setup, replicas, &[], &[]).await
    }

    pub async fn start_with(
        setup: impl Into<Setup>,
        replicas: usize,
        gateway_env: &[(&str, &str)],
        web_env: &[(&str, &str)],
    ) -> Counter {
        let setup = setup.into();
        let backend = setup.backend;
        let turn = backend.exclusive().await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let data_dir = dir.path().join("data");
        let gateway = Gateway::start_with(backend, &data_dir, dir.path(), gateway_env).await;
        // Server ids unique to this run, so per-server totals start at zero even on
        // a shared cluster.
        let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut webs = Vec::new();
        for i in 1..=replicas {
            webs.push(
                Web::start_on(
                    setup.runtime,
                    &gateway.url,
                    &format!("e2e-{run}-web{i}"),
                    dir.path(),
                    web_env,
                )
                .await,
            );
        }
        let baseline = gateway.summary().await;
        Counter {
            setup,
            gateway,
            webs,
            baseline,
            dir,
            _turn: turn,
        }
    }

    /// This run's per-server totals, by server id.
    pub fn server_totals(&self, summary: &Summary) -> Vec<(String, u64)> {
        self.webs
            .iter()
            .map(|web| {
                let total = summary
                    .servers
                    .iter()
                    .find(|s| s.server.as_str() == web.server_id)
                    .map_or(0, |s| s.total);
                (web.server_id.clone(), total)
            })
            .collect()
    }

    /// Same, counted from the hit records.
    pub fn hit_records(&self, audit: &Audit) -> Vec<(String, u64)> {
        self.server_totals(&audit.hit_records)
    }
}

async fn wait_until_ok(url: &str, process: &mut Process) {
    let client = http_client();
    let started = Instant::now();
    loop {
        process.assert_running();
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{url} was not ready within 60 s; log:\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET url`: its status and its body as text.
pub async fn get_text(url: &str) -> (reqwest::StatusCode, String) {
    let response = http_client().get(url).send().await.expect("GET");
    let status = response.status();
    (status, response.text().await.expect("a text body"))
}

/// `GET url` as JSON, or a panic that shows the status and the body.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    let response = http_client().get(url).send().await.expect("GET");
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        panic!("{url} answered {status}: {body}");
    }
    response.json().await.expect("JSON")
}
