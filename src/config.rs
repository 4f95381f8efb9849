//! Typed settings, layered: `config/default.toml` (built in) < the file named by
//! `PRODUKTLY_CONFIG` < `PRODUKTLY_*` environment variables (and `DATABASE_URL`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

pub use crate::domain::IpPolicy;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// Sections of the settings; `PRODUKTLY_<SECTION>_<KEY>` sets `<key>` in `[<section>]`.
const SECTIONS: &[&str] = &["http", "segment", "ingest", "delivery"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Load(#[from] Box<figment::Error>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_max_connections: u32,
    pub database_acquire_timeout_ms: u64,
    pub data_dir: PathBuf,
    #[serde(deserialize_with = "comma_separated_secrets")]
    pub admin_tokens: Vec<SecretString>,
    pub admin_requests_per_sec: u32,
    pub secret_key: SecretString,
    #[serde(deserialize_with = "comma_separated_secrets")]
    pub previous_secret_keys: Vec<SecretString>,
    pub log_format: LogFormat,
    pub shutdown_timeout_ms: u64,
    pub http: HttpSettings,
    pub segment: SegmentSettings,
    pub ingest: IngestSettings,
    pub delivery: DeliverySettings,
    pub activity: ActivitySettings,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

/// What the HTTP server holds every client connection to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// 0: as many as the open-file limit leaves room for.
    pub max_connections: usize,
}

/// What each instance keeps of recent activity for the delivery debugger.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitySettings {
    /// The name this instance gives in activity; empty: `$HOSTNAME`, else a random one.
    pub instance: String,
    pub events_per_workspace: usize,
    pub deliveries_per_workspace: usize,
    pub max_workspaces: usize,
    pub ids: IdDisplay,
    pub stream_buffer: usize,
    pub heartbeat_ms: u64,
    /// Origins that may embed `/debugger/` in a frame (space-separated; empty: none).
    pub debugger_frame_ancestors: String,
}

/// How user and anonymous ids are shown in activity.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdDisplay {
    /// The first and last two characters (`cu…42`).
    Masked,
    Full,
}

impl ActivitySettings {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSettings {
    pub us_url: String,
    pub eu_url: String,
    pub request_timeout_ms: u64,
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    pub gzip: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_batch_events: usize,
    pub max_pending_events: usize,
    pub commit_max_rows: usize,
    pub commit_timeout_ms: u64,
    pub max_queue_depth: u64,
    pub key_cache_ttl_ms: u64,
    pub max_json_depth: usize,
    pub max_string_bytes: usize,
    pub max_object_keys: usize,
    pub key_requests_per_sec: u32,
    pub ip_requests_per_sec: u32,
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    pub ip_policy: IpPolicy,
    pub body_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub poll_interval_ms: u64,
    pub linger_ms: u64,
    pub lease_ms: u64,
    pub max_concurrent_requests: usize,
    pub workspace_max_requests_per_sec: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub max_age_secs: u64,
    pub janitor_interval_ms: u64,
    pub dead_letter_retention_secs: u64,
    pub identity_retention_secs: u64,
    pub region_down_after_failures: u32,
    pub region_probe_interval_ms: u64,
}

/// Which database the URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Settings {
    /// Settings from the built-in defaults, `PRODUKTLY_CONFIG` and the environment.
    pub fn load() -> Result<Settings, ConfigError> {
        let mut figment = Self::defaults();
        if let Ok(path) = std::env::var("PRODUKTLY_CONFIG") {
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("PRODUKTLY_")
            .ignore(&["config"])
            .map(|key| nest_section(&key.as_str().to_ascii_lowercase()).into());
        figment = figment.merge(Env::raw().only(&["database_url"])).merge(env);
        Self::extract(figment)
    }

    /// The built-in defaults alone, for callers (tests, the benchmark) that
    /// layer their own values on top.
    pub fn defaults() -> Figment {
        Figment::from(Toml::string(DEFAULTS))
    }

    /// Settings from a figment, checked.
    pub fn extract(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let segment = &self.segment;
        if !(1..=2500).contains(&segment.max_batch_messages) {
            return invalid("segment.max_batch_messages must be between 1 and 2500");
        }
        if !(32_000..=500_000).contains(&segment.max_batch_bytes) {
            return invalid("segment.max_batch_bytes must be between 32000 and 500000");
        }
        for url in [&segment.us_url, &segment.eu_url] {
            if url::Url::parse(url).is_err() {
                return invalid(&format!("segment URL {url:?} is not a valid URL"));
            }
        }
        if self.http.header_timeout_ms == 0 || self.http.idle_timeout_ms == 0 {
            return invalid("http.header_timeout_ms and http.idle_timeout_ms must be positive");
        }
        if self.ingest.commit_max_rows == 0 || self.ingest.max_pending_events == 0 || self.ingest.commit_timeout_ms == 0
        {
            return invalid(
                "ingest.commit_max_rows, ingest.max_pending_events and ingest.commit_timeout_ms must be positive",
            );
        }
        if self.delivery.max_concurrent_requests == 0 || self.delivery.workspace_max_requests_per_sec == 0 {
            return invalid(
                "delivery.max_concurrent_requests and delivery.workspace_max_requests_per_sec must be positive",
            );
        }
        if self.delivery.region_down_after_failures == 0 || self.delivery.region_probe_interval_ms == 0 {
            return invalid(
                "delivery.region_down_after_failures and delivery.region_probe_interval_ms must be positive",
            );
        }
        if self.delivery.identity_retention_secs < MIN_IDENTITY_RETENTION_SECS {
            // A link in use is renewed only once a day (see `LINK_REFRESH_MILLIS`).
            return invalid(&format!(
                "delivery.identity_retention_secs must be at least {MIN_IDENTITY_RETENTION_SECS} (2 days)"
            ));
        }
        if self.delivery.lease_ms <= self.segment.request_timeout_ms {
            return invalid("delivery.lease_ms must be longer than segment.request_timeout_ms");
        }
        let activity = &self.activity;
        if activity.max_workspaces == 0 || activity.stream_buffer == 0 || activity.heartbeat_ms == 0 {
            return invalid(
                "activity.max_workspaces, activity.stream_buffer and activity.heartbeat_ms must be positive",
            );
        }
        self.backend()?;
        Ok(())
    }

    /// The database URL, defaulting to a SQLite file in the data folder.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            let path = self.data_dir.join("produktly.db");
            format!("sqlite://{}?mode=rwc", path.display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn database_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database_acquire_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn backend(&self) -> Result<Backend, ConfigError> {
        let url = self.database_url();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            invalid("database_url must start with postgres://, postgresql:// or sqlite:")
        }
    }
}

impl HttpSettings {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

impl SegmentSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl IngestSettings {
    pub fn key_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.key_cache_ttl_ms)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }
}

impl DeliverySettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn region_probe_interval(&self) -> Duration {
        Duration::from_millis(self.region_probe_interval_ms)
    }
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }
    pub fn janitor_interval(&self) -> Duration {
        Duration::from_millis(self.janitor_interval_ms)
    }
    /// The least time between two requests for one workspace.
    pub fn workspace_request_interval(&self) -> Duration {
        Duration::from_secs(1) / self.workspace_max_requests_per_sec.max(1)
    }
    pub fn dead_letter_retention(&self) -> Duration {
        Duration::from_secs(self.dead_letter_retention_secs)
    }
    pub fn identity_retention(&self) -> Duration {
        Duration::from_secs(self.identity_retention_secs)
    }
}

/// Twice the interval at which a link in use is renewed.
const MIN_IDENTITY_RETENTION_SECS: u64 = 2 * crate::domain::LINK_REFRESH_MILLIS as u64 / 1000;

fn invalid<T>(message: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(message.to_owned()))
}

/// `segment_us_url` → `segment.us_url`: the first word names the section.
fn nest_section(key: &str) -> String {
    for section in SECTIONS {
        if let Some(rest) = key.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            return format!("{section}.{rest}");
        }
    }
    key.to_owned()
}

/// Secrets given as a TOML array or one comma-separated string.
fn comma_separated_secrets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(comma_separated(deserializer)?.into_iter().map(SecretString::from).collect())
}

/// Networks in CIDR notation (a single address counts as its own network).
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    comma_separated(deserializer)?
        .iter()
        .map(|net| {
            net.parse::<IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{net:?} is not an address or CIDR network")))
        })
        .collect()
}

/// A list given either as a TOML array or as one comma-separated string.
fn comma_separated<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(v) => v,
    };
    Ok(items.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    #[test]
    fn defaults_load_and_use_sqlite_in_the_data_folder() {
        let settings = Settings::extract(Settings::defaults()).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.backend().unwrap(), Backend::Sqlite);
        assert_eq!(settings.database_url(), "sqlite://data/produktly.db?mode=rwc");
        assert!(settings.admin_tokens.is_empty());
        assert!(settings.ingest.trusted_proxies.is_empty());
        assert_eq!(settings.segment.us_url, "https://api.segment.io");
    }

    #[test]
    fn env_names_map_to_sections() {
        assert_eq!(nest_section("segment_us_url"), "segment.us_url");
        assert_eq!(nest_section("delivery_lease_ms"), "delivery.lease_ms");
        assert_eq!(nest_section("admin_tokens"), "admin_tokens");
        assert_eq!(nest_section("listen"), "listen");
        assert_eq!(nest_section("http_header_timeout_ms"), "http.header_timeout_ms");
    }

    #[test]
    fn lists_split_on_commas_and_secrets_do_not_print() {
        use secrecy::ExposeSecret;
        let figment = Settings::defaults()
            .merge(Serialized::default("admin_tokens", " a-token, b-token ,,c-token"))
            .merge(Serialized::default("ingest.trusted_proxies", "10.0.0.0/8, 192.168.1.7"));
        let settings = Settings::extract(figment).unwrap();
        let tokens: Vec<&str> = settings.admin_tokens.iter().map(|t| t.expose_secret()).collect();
        assert_eq!(tokens, ["a-token", "b-token", "c-token"]);
        assert!(!format!("{settings:?}").contains("a-token"));
        assert_eq!(settings.ingest.trusted_proxies.len(), 2);
        let bad = Settings::defaults().merge(Serialized::default("ingest.trusted_proxies", "not-a-net"));
        assert!(Settings::extract(bad).is_err());
    }

    #[test]
    fn out_of_range_batch_limits_are_refused() {
        let figment = Settings::defaults().merge(Serialized::default("segment.max_batch_messages", 3000));
        assert!(Settings::extract(figment).is_err());
    }

    #[test]
    fn identity_retention_outlasts_the_renewal_of_links() {
        let retention = |secs: u64| {
            Settings::extract(Settings::defaults().merge(Serialized::default("delivery.identity_retention_secs", secs)))
        };
        assert_eq!(MIN_IDENTITY_RETENTION_SECS, 172_800);
        assert!(retention(172_799).is_err());
        assert!(retention(172_800).is_ok());
    }
}
