//! The service under test: this same binary run again with `--serve`, as a
//! child process, so that its memory is its own and the load generator is a
//! separate process. It runs the service's library as `produktly-segment
//! serve` does.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::BenchError;

/// The child's part: the service, configured from its environment, until SIGTERM.
pub async fn serve() -> std::process::ExitCode {
    let settings = match produktly_segment::Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("produktly-bench --serve: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    produktly_segment::telemetry::init(settings.log_format);
    match produktly_segment::app::serve_until_signalled(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl Service {
    pub async fn start(database_url: &str, data_dir: &Path, segment_url: &str) -> Result<Service, BenchError> {
        Service::launch(Command::new(std::env::current_exe()?), database_url, data_dir, segment_url).await
    }

    /// Starts with its open-file limit (soft and hard) at `files`.
    pub async fn start_with_file_limit(
        database_url: &str,
        data_dir: &Path,
        segment_url: &str,
        files: u64,
    ) -> Result<Service, BenchError> {
        let mut prlimit = Command::new("prlimit");
        prlimit.arg(format!("--nofile={files}:{files}")).arg("--").arg(std::env::current_exe()?);
        Service::launch(prlimit, database_url, data_dir, segment_url).await
    }

    async fn launch(
        mut command: Command,
        database_url: &str,
        data_dir: &Path,
        segment_url: &str,
    ) -> Result<Service, BenchError> {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = data_dir.join("service.log");
        let child = command
            .arg("--serve")
            .env("PRODUKTLY_LISTEN", addr.to_string())
            .env("DATABASE_URL", database_url)
            .env("PRODUKTLY_DATA_DIR", data_dir)
            .env("PRODUKTLY_ADMIN_TOKENS", ADMIN_TOKEN)
            .env("PRODUKTLY_SECRET_KEY", produktly_segment::secrets::random_base64(32))
            .env("PRODUKTLY_SEGMENT_US_URL", segment_url)
            .env("PRODUKTLY_LOG_FORMAT", "json")
            // A load test sends from one address far faster than a browser.
            .env("PRODUKTLY_INGEST_IP_REQUESTS_PER_SEC", "0")
            .env("PRODUKTLY_INGEST_KEY_REQUESTS_PER_SEC", "0")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or("warn".into()))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::inherit())
            .spawn()?;
        let service = Service { child, addr, log, http: reqwest::Client::new() };
        service.wait_until_healthy().await?;
        Ok(service)
    }

    async fn wait_until_healthy(&self) -> Result<(), BenchError> {
        for _ in 0..400 {
            if let Ok(response) = self.http.get(format!("http://{}/healthz", self.addr)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(BenchError(format!("the service did not start; see {}", self.log.display())))
    }

    /// A workspace with a Segment integration; returns its ingest key.
    pub async fn workspace(&self, name: &str) -> Result<String, BenchError> {
        self.workspace_with(name, true).await
    }

    /// A workspace, with a Segment integration or without one (its events are
    /// then validated and answered, but not stored); returns its ingest key.
    pub async fn workspace_with(&self, name: &str, segment: bool) -> Result<String, BenchError> {
        let workspace = self.admin(reqwest::Method::POST, "/admin/v1/workspaces", json!({"name": name})).await?;
        let id = workspace["id"].as_str().ok_or_else(|| BenchError("no workspace id".into()))?;
        if segment {
            let path = format!("/admin/v1/workspaces/{id}/integrations/segment");
            self.admin(reqwest::Method::PUT, &path, json!({"write_key": format!("bench-{name}")})).await?;
        }
        Ok(workspace["ingest_key"].as_str().unwrap_or_default().to_owned())
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, BenchError> {
        let response = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .map_err(|e| BenchError(e.to_string()))?;
        if !response.status().is_success() {
            return Err(BenchError(format!("{path} answered {}", response.status())));
        }
        response.json().await.map_err(|e| BenchError(e.to_string()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The most memory the process has held (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        self.memory("VmHWM:")
    }

    /// The memory the process holds now (VmRSS), in bytes.
    pub fn current_rss(&self) -> Option<u64> {
        self.memory("VmRSS:")
    }

    fn memory(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The service's own count of undelivered events (its metrics).
    pub async fn queue_depth(&self) -> Option<i64> {
        let lines = self.metrics_matching("produktly_queue_depth ").await;
        lines.first()?.strip_prefix("produktly_queue_depth ")?.trim().parse().ok()
    }

    /// The lines of the service's metrics that start with `prefix`.
    pub async fn metrics_matching(&self, prefix: &str) -> Vec<String> {
        let metrics = match self.http.get(format!("http://{}/metrics", self.addr)).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        metrics.lines().filter(|line| line.starts_with(prefix)).map(str::to_owned).collect()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> Result<(), BenchError> {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        let status = self.child.wait()?;
        if status.success() { Ok(()) } else { Err(BenchError(format!("the service exited with {status}"))) }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
