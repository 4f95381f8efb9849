//! The HTTP client for Segment's Tracking API, and what each answer means.

use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use std::io::Write;

use super::Region;
use crate::config::SegmentSettings;
use crate::secrets::WriteKey;

/// Longest wait a `Retry-After` may impose; a longer one is taken as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Wait after a 429 that names none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How much of an error answer is kept as the reason.
const MAX_ERROR_BODY: usize = 1024;

/// What Segment's answer to a batch means for the events in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: Segment has the events.
    Delivered { status: u16 },
    /// 400 or 413: Segment refuses the batch as it is; retrying it unchanged is futile.
    Rejected { status: u16, body: String },
    /// 429, or 503 with `Retry-After`: try again after the wait, which is not a failure.
    RateLimited { status: u16, retry_after: Duration },
    /// Any other answer, a timeout or a connection error: retry with backoff.
    Failed { status: Option<u16>, message: String },
}

impl Outcome {
    /// The HTTP status Segment answered with (0: no answer).
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Delivered { status } | Outcome::Rejected { status, .. } | Outcome::RateLimited { status, .. } => {
                *status
            }
            Outcome::Failed { status, .. } => status.unwrap_or(0),
        }
    }

    /// Whether the failure speaks of Segment's region rather than of the
    /// workspace: no answer at all (timeout, connection error) or a 5xx.
    pub fn is_region_wide_failure(&self) -> bool {
        matches!(self, Outcome::Failed { status, .. } if status.is_none_or(|status| status >= 500))
    }
}

#[derive(Clone, Debug)]
pub struct SegmentClient {
    http: reqwest::Client,
    us_batch_url: String,
    eu_batch_url: String,
    request_timeout: Duration,
    gzip: bool,
}

impl SegmentClient {
    pub fn new(settings: &SegmentSettings) -> Result<SegmentClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.request_timeout())
            .connect_timeout(settings.request_timeout().min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(SegmentClient {
            http,
            us_batch_url: batch_url(&settings.us_url),
            eu_batch_url: batch_url(&settings.eu_url),
            request_timeout: settings.request_timeout(),
            gzip: settings.gzip,
        })
    }

    /// The longest one request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn batch_url(&self, region: Region) -> &str {
        match region {
            Region::Us => &self.us_batch_url,
            Region::Eu => &self.eu_batch_url,
        }
    }

    /// Posts one batch body with the workspace's write key (HTTP Basic, empty
    /// password), gzip-compressed unless configured otherwise.
    pub async fn send(&self, region: Region, write_key: &WriteKey, body: Vec<u8>) -> Outcome {
        let mut request = self
            .http
            .post(self.batch_url(region))
            .basic_auth(write_key.expose(), Some(""))
            .header(CONTENT_TYPE, "application/json");
        request = if self.gzip {
            // Compressing half a megabyte takes milliseconds: off the async workers.
            match tokio::task::spawn_blocking(move || gzip(&body)).await {
                Ok(compressed) => request.header(CONTENT_ENCODING, "gzip").body(compressed),
                Err(e) => {
                    return Outcome::Failed { status: None, message: format!("could not compress the batch: {e}") };
                }
            }
        } else {
            request.body(body)
        };
        match request.send().await {
            Ok(response) => classify(response).await,
            Err(e) => Outcome::Failed { status: None, message: describe_send_error(&e) },
        }
    }
}

/// The body gzip-compressed, at the fast level: JSON shrinks several times
/// over even so, and the CPU goes to delivery rather than to squeezing.
fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder.write_all(body).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

fn batch_url(base: &str) -> String {
    format!("{}/v1/batch", base.trim_end_matches('/'))
}

async fn classify(response: reqwest::Response) -> Outcome {
    let status = response.status();
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Delivered { status: code };
    }
    let retry_after = retry_after(response.headers(), SystemTime::now());
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            Outcome::RateLimited { status: code, retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER) }
        }
        StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => {
            Outcome::RateLimited { status: code, retry_after: retry_after.unwrap_or_default() }
        }
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
            Outcome::Rejected { status: code, body: error_body(response).await }
        }
        _ => Outcome::Failed { status: Some(code), message: error_body(response).await },
    }
}

/// The start of an error answer, as text.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if text.is_empty() { format!("HTTP {}", response.status()) } else { text }
}

fn describe_send_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "request to Segment timed out".to_owned()
    } else if e.is_connect() {
        "could not connect to Segment".to_owned()
    } else {
        "request to Segment failed before an answer".to_owned()
    }
}

/// The wait asked for by `Retry-After` (seconds or an HTTP date) or, failing
/// that, `X-RateLimit-Reset` (seconds), capped.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let wait = header(RETRY_AFTER.as_str())
        .and_then(|value| {
            value.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
                let at = httpdate::parse_http_date(value).ok()?;
                Some(at.duration_since(now).unwrap_or_default())
            })
        })
        .or_else(|| header("x-ratelimit-reset")?.parse::<u64>().ok().map(Duration::from_secs))?;
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn gzip_inflates_back_to_the_body() {
        let body = br#"{"batch":[{"type":"track","event":"tour_start"}],"sentAt":"2026-01-01T00:00:00Z"}"#.repeat(50);
        let compressed = gzip(&body);
        assert!(compressed.len() < body.len() / 4);
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut inflated).unwrap();
        assert_eq!(inflated, body);
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_the_rate_limit_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(&headers("retry-after", "2"), now), Some(Duration::from_secs(2)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&headers("retry-after", &date), now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&headers("retry-after", &past), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("x-ratelimit-reset", "5"), now), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(&headers("retry-after", "99999999"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("retry-after", "soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
