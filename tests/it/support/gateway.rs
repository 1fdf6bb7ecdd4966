//! A gateway under test: in-process (`TestGateway`, the usual way) or as a
//! child process of the real binary (`GatewayProcess`, for signals and crashes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use switchyard::config::{self, Config};
use switchyard::{Listeners, ServerError};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::free_port;
use super::test_redis::TestRedis;

/// A minimal valid config on `redis_url`, listening on free ports, with
/// `extra` TOML appended (owners, sources, routes...).
pub fn config_toml(redis_url: &str, extra: &str) -> String {
    config_toml_on(&format!("url = \"{redis_url}\""), extra)
}

/// [`config_toml`] with `redis` as the body of its `[redis]` table (a
/// cluster's or sentinels' nodes, partitions, ack_replicas...).
pub fn config_toml_on(redis: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[redis]
{redis}

[admin]
tokens = [{{ name = "test-ops", secret = "test-admin-token" }}]

{extra}
"#
    )
}

/// Calls the admin API at `admin` with the test token; the status and JSON
/// answer.
async fn admin_request(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{admin}{path}"))
        .bearer_auth(super::env::ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin answers");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Starts a bulk replay (`POST /admin/dead-letters/replay` with `body`) on
/// the admin API at `admin` and waits up to a minute for the replay job to
/// end; the start's status and, when it started, the job's final record.
async fn bulk_replay_at(admin: SocketAddr, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, started) = admin_request(
        admin,
        http::Method::POST,
        "/admin/dead-letters/replay",
        Some(body),
    )
    .await;
    let Some(id) = started["replay"].as_str() else {
        return (status, started);
    };
    let path = format!("/admin/replays/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, record) = admin_request(admin, http::Method::GET, &path, None).await;
        if record["state"] != "running" || Instant::now() > deadline {
            return (status, record);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses TOML into a config with an empty environment.
pub fn parse_config(toml: &str) -> Config {
    config::from_toml(toml, Path::new("test.toml"), Path::new("."), &|_| None)
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
}

/// A gateway running inside the test process; stopped on drop.
pub struct TestGateway {
    /// Public listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl TestGateway {
    /// Starts a gateway on `config`, on ports of 127.0.0.1 chosen by the OS.
    pub async fn start(config: Config) -> Self {
        let listeners = Listeners::bind(&config).await.expect("bind test listeners");
        let public = listeners.public.local_addr().expect("public addr");
        let admin = listeners.admin.local_addr().expect("admin addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(switchyard::run(config, listeners, shutdown.clone()));
        Self {
            public,
            admin,
            shutdown,
            task: Some(task),
        }
    }

    /// Starts a gateway on `config_toml(redis_url, extra)`.
    pub async fn start_toml(redis_url: &str, extra: &str) -> Self {
        Self::start(parse_config(&config_toml(redis_url, extra))).await
    }

    /// `http://<public><path>`
    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// `http://<admin><path>`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Posts a GitHub-style event signed with `secret` to `/hooks/github`;
    /// the status and JSON answer.
    pub async fn post_github(
        &self,
        secret: &str,
        event: &str,
        delivery: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client");
        let url = self.public_url("/hooks/github");
        super::github::post(&client, &url, secret, event, delivery, body.as_bytes()).await
    }

    /// Calls the admin API with the test token; the status and JSON answer.
    pub async fn admin(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        admin_request(self.admin, method, path, body).await
    }

    /// A bulk replay run to its end (see [`bulk_replay_at`]).
    pub async fn bulk_replay(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        bulk_replay_at(self.admin, body).await
    }

    /// The Prometheus text of `/metrics` on the admin listener.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Requests shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        task.await.expect("gateway task did not panic")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The `[admin] tokens` line `config_toml` writes.
const DEFAULT_ADMIN_TOKENS: &str =
    r#"tokens = [{ name = "test-ops", secret = "test-admin-token" }]"#;

/// How a [`GatewayProcess`] runs besides its config; the default is what
/// [`GatewayProcess::start`] uses (`RUST_LOG=info`, no extra environment,
/// the admin token of `config_toml`).
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    log_filter: String,
    env: Vec<(String, String)>,
    admin_tokens: Option<String>,
    soft_open_files: Option<u64>,
    hard_open_files: Option<u64>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self {
            log_filter: "info".to_owned(),
            env: Vec::new(),
            admin_tokens: None,
            soft_open_files: None,
            hard_open_files: None,
        }
    }
}

impl ProcessOptions {
    /// `RUST_LOG` of the process (e.g. `trace`).
    pub fn log_filter(self, filter: &str) -> Self {
        Self {
            log_filter: filter.to_owned(),
            ..self
        }
    }

    /// One more environment variable of the process (for `env:` secrets).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the process with this soft open-file limit (`ulimit -Sn`).
    pub fn soft_open_files(self, limit: u64) -> Self {
        Self {
            soft_open_files: Some(limit),
            ..self
        }
    }

    /// Starts the process with this hard open-file limit (`ulimit -Hn`),
    /// which the gateway cannot raise: a process that runs out of them.
    pub fn hard_open_files(self, limit: u64) -> Self {
        Self {
            hard_open_files: Some(limit),
            ..self
        }
    }

    /// Replaces the `tokens = [...]` line of `[admin]` with `line`.
    pub fn admin_tokens(self, line: &str) -> Self {
        Self {
            admin_tokens: Some(line.to_owned()),
            ..self
        }
    }
}

/// The real `switchyard` binary as a child process; killed on drop.
pub struct GatewayProcess {
    child: Option<Child>,
    /// Public listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    _dir: TempDir,
    config_path: PathBuf,
    log: PathBuf,
    options: ProcessOptions,
}

impl GatewayProcess {
    /// Writes `config_toml(redis_url, extra)` with fixed free ports and runs
    /// `switchyard serve` on it; returns once `/healthz` answers.
    pub async fn start(redis_url: &str, extra: &str) -> Self {
        Self::start_with(redis_url, extra, ProcessOptions::default()).await
    }

    /// [`GatewayProcess::start`] on `redis`, whichever mode it runs in.
    pub async fn start_on(redis: &TestRedis, extra: &str) -> Self {
        Self::launch(&redis.redis_block(), extra, ProcessOptions::default()).await
    }

    /// [`GatewayProcess::start`] with `options` (log filter, environment,
    /// admin tokens); they hold for restarts too.
    pub async fn start_with(redis_url: &str, extra: &str, options: ProcessOptions) -> Self {
        Self::launch(&format!("url = \"{redis_url}\""), extra, options).await
    }

    /// Runs the gateway on `config_toml_on(redis_block, extra)`.
    async fn launch(redis_block: &str, extra: &str, options: ProcessOptions) -> Self {
        let public: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut toml = config_toml_on(redis_block, extra);
        if let Some(tokens) = &options.admin_tokens {
            assert!(toml.contains(DEFAULT_ADMIN_TOKENS), "config_toml changed");
            toml = toml.replacen(DEFAULT_ADMIN_TOKENS, tokens, 1);
        }
        let toml = toml
            .replace(
                "\nlisten = \"127.0.0.1:0\"",
                &format!("\nlisten = \"{public}\""),
            )
            .replace(
                "\nadmin_listen = \"127.0.0.1:0\"",
                &format!("\nadmin_listen = \"{admin}\""),
            );
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("switchyard.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let log = dir.path().join("gateway.log");
        let mut process = Self {
            child: None,
            public,
            admin,
            _dir: dir,
            config_path,
            log,
            options,
        };
        process.spawn().await;
        process
    }

    /// Starts the process again on the same config and ports, killing it
    /// first if it still runs (as a supervisor would after a crash); returns
    /// once `/healthz` answers. The log keeps every run's lines.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let binary = env!("CARGO_BIN_EXE_switchyard");
        let limits: Vec<String> = [
            // Without -H or -S both limits are set (soft above hard is refused).
            self.options
                .hard_open_files
                .map(|n| format!("ulimit -n {n}")),
            self.options
                .soft_open_files
                .map(|n| format!("ulimit -Sn {n}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut command = if limits.is_empty() {
            Command::new(binary)
        } else {
            // The shell sets the limits, then becomes the gateway (same pid).
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{} && exec \"$0\" \"$@\"", limits.join(" && ")))
                .arg(binary);
            sh
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", &self.options.log_filter)
            .env("SWITCHYARD_LOG_FORMAT", "json")
            // Deliveries to 127.0.0.1 go direct unless a test names a proxy.
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let url = format!("http://{}/healthz", self.admin);
        let up = super::eventually(Duration::from_secs(15), || {
            let request = client.get(&url).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        assert!(up, "gateway did not come up; log:\n{}", self.log());
    }

    /// `http://<public><path>`
    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// The config file the process runs on.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The Prometheus text of `/metrics` on the admin listener.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Calls the admin API with the test token; the status and JSON answer.
    pub async fn admin(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        admin_request(self.admin, method, path, body).await
    }

    /// What the gateway wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `within` for `needle` in the log; panics saying `why`,
    /// with the log, if it does not come.
    pub async fn expect_log(&self, needle: &str, within: Duration, why: &str) {
        let logged = super::eventually(within, || async { self.log().contains(needle) }).await;
        assert!(logged, "{why}: {needle:?} not logged:\n{}", self.log());
    }

    /// The running process's id (it names the process's consumer in the
    /// delivery group: `<host>-<pid>-<suffix>`); `None` once it exited.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal gateway");
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (if still running) and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
