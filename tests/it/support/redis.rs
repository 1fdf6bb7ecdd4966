//! A private `redis-server` on a free port with its own data directory, so
//! tests are isolated from each other and from the Redis on 6379, and can
//! stop, kill and restart it to inject faults.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// How long a starting redis-server gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or stopped) private Redis.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    extra_args: Vec<String>,
    /// A config file passed first: sentinel mode needs one it can rewrite.
    config_file: Option<PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis with AOF and fsync on every write, the durable setting
    /// the gateway's guarantees assume.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts durable Redis on a given port (for a gateway that was
    /// configured before Redis existed).
    pub fn start_on(port: u16) -> Self {
        Self::spawn_new(port, &["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts Redis with extra `redis-server` arguments.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::spawn_new(free_port(), extra_args)
    }

    /// Starts Redis on a given port with extra `redis-server` arguments (a
    /// cluster node, whose port must leave room for its bus port).
    pub fn start_on_with(port: u16, extra_args: &[&str]) -> Self {
        Self::spawn_new(port, extra_args)
    }

    /// Starts a Redis Sentinel on `port` whose config file, in its own
    /// directory, begins with `config`; Sentinel rewrites that file as it
    /// learns the topology.
    pub fn start_sentinel(port: u16, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis sentinel");
        let config_file = dir.path().join("sentinel.conf");
        std::fs::write(&config_file, config).expect("write sentinel.conf");
        Self::spawn_in(port, dir, Some(config_file), &["--sentinel"])
    }

    fn spawn_new(port: u16, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        Self::spawn_in(port, dir, None, extra_args)
    }

    fn spawn_in(
        port: u16,
        dir: TempDir,
        config_file: Option<PathBuf>,
        extra_args: &[&str],
    ) -> Self {
        let mut server = Self {
            port,
            dir,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            config_file,
            child: None,
        };
        server.spawn();
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it was started and not stopped or killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A connection for inspecting what the gateway wrote.
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            // redis-server reads a config file only as its first argument.
            .args(&self.config_file)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.answers_ping() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server on port {} did not start:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Stops Redis like an operator would (SIGTERM: it flushes the AOF).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Kills Redis like a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts Redis as [`Self::restart`] does, with other extra arguments
    /// (an operator's config change, say); they hold for later restarts.
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| (*s).to_owned()).collect();
        self.restart();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
