//! The real binary as a child process, for what only a process shows:
//! signals, crashes, restarts.

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{ADMIN_TOKEN, Env, SECRET_KEY, ServiceClient};

const BINARY: &str = env!("CARGO_BIN_EXE_produktly-segment");

pub struct ServiceProcess {
    child: Child,
    pub base: String,
    pub log: std::path::PathBuf,
}

impl ServiceProcess {
    /// Starts the service on `env`'s database and mock Segment, with extra
    /// environment variables, and waits until it answers.
    pub async fn start(env: &Env, extra: &[(&str, &str)]) -> ServiceProcess {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        ServiceProcess::start_on(env, port, extra).await
    }

    /// Starts on a given port (a restart keeps its address).
    pub async fn start_on(env: &Env, port: u16, extra: &[(&str, &str)]) -> ServiceProcess {
        ServiceProcess::launch(env, port, Command::new(BINARY), extra).await
    }

    /// Starts with its open-file limit (soft and hard) at `files`, as a
    /// small container or a systemd unit might set it.
    pub async fn start_with_file_limit(env: &Env, files: u64, extra: &[(&str, &str)]) -> ServiceProcess {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut prlimit = Command::new("prlimit");
        prlimit.arg(format!("--nofile={files}:{files}")).arg("--").arg(BINARY);
        ServiceProcess::launch(env, port, prlimit, extra).await
    }

    async fn launch(env: &Env, port: u16, mut command: Command, extra: &[(&str, &str)]) -> ServiceProcess {
        let log = env.db.dir.path().join(format!("service-{port}.log"));
        // The tests' own settings are not the service's (it refuses unknown ones).
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PRODUKTLY_TEST_")) {
            command.env_remove(name);
        }
        command
            .env("PRODUKTLY_LISTEN", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &env.db.url)
            .env("PRODUKTLY_DATA_DIR", env.db.dir.path())
            .env("PRODUKTLY_ADMIN_TOKENS", ADMIN_TOKEN)
            .env("PRODUKTLY_SECRET_KEY", SECRET_KEY)
            .env("PRODUKTLY_SEGMENT_US_URL", env.segment.uri())
            .env("PRODUKTLY_SEGMENT_EU_URL", env.eu_segment.uri())
            .env("PRODUKTLY_DELIVERY_POLL_INTERVAL_MS", "100")
            .env("PRODUKTLY_DELIVERY_LINGER_MS", "5")
            .env("PRODUKTLY_DELIVERY_BACKOFF_BASE_MS", "50")
            .env("PRODUKTLY_DELIVERY_BACKOFF_MAX_MS", "200")
            .env("PRODUKTLY_LOG_FORMAT", "json")
            .env("PRODUKTLY_INGEST_IP_REQUESTS_PER_SEC", "0")
            .env("PRODUKTLY_INGEST_KEY_REQUESTS_PER_SEC", "0")
            .env("PRODUKTLY_ADMIN_REQUESTS_PER_SEC", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit());
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("the service binary starts");
        let service = ServiceProcess { child, base: format!("http://127.0.0.1:{port}"), log };
        service.wait_until_healthy().await;
        service
    }

    async fn wait_until_healthy(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = http.get(format!("{}/healthz", self.base)).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the service did not come up; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self) -> ServiceClient {
        ServiceClient::new(self.base.clone())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit, at most `within`.
    pub async fn terminate(mut self, within: Duration) -> ExitStatus {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within {within:?} of SIGTERM; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the process dies at once, mid-flight.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}
