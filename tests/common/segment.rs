//! A strict stand-in for Segment's Tracking API (`POST /v1/batch`) over real
//! HTTP: it checks every request against Segment's rules and records what it
//! accepted; tests inject failures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

type Refusal = Box<dyn Fn(&Value) -> bool + Send + Sync>;

/// One message Segment accepted, with what came with it.
#[derive(Clone, Debug)]
pub struct Received {
    pub message: Value,
    pub write_key: String,
    pub sent_at: String,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    accepted: Vec<Received>,
    violations: Vec<String>,
    refuse: Option<Refusal>,
    /// While set, every request is answered with this status.
    outage: Option<u16>,
}

pub struct MockSegment {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl MockSegment {
    pub async fn start() -> MockSegment {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(method("POST"))
            .and(path("/v1/batch"))
            .respond_with(Strict {
                state: state.clone(),
            })
            .with_priority(10)
            .mount(&server)
            .await;
        MockSegment { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Messages accepted so far, in arrival order (duplicates included).
    pub fn accepted(&self) -> Vec<Received> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Requests that broke one of Segment's rules.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Every request received, accepted or not.
    pub async fn request_count(&self) -> usize {
        self.server.received_requests().await.map_or(0, |r| r.len())
    }

    /// Waits until at least `count` messages were accepted.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        super::eventually(
            timeout,
            &format!("{count} messages at the mock Segment"),
            || async { self.state.lock().unwrap().accepted.len() >= count },
        )
        .await;
        self.accepted()
    }

    /// The next `times` requests get `status` (with optional headers), whatever they hold.
    pub async fn fail_next(&self, times: u64, status: u16, headers: &[(&str, &str)]) {
        let mut response =
            ResponseTemplate::new(status).set_body_string("{\"error\":\"injected\"}");
        for (name, value) in headers {
            response = response.insert_header(*name, *value);
        }
        Mock::given(method("POST"))
            .and(path("/v1/batch"))
            .respond_with(response)
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Answers every request with `status` (e.g. 500) until `end_outage`.
    pub fn start_outage(&self, status: u16) {
        self.state.lock().unwrap().outage = Some(status);
    }

    pub fn end_outage(&self) {
        self.state.lock().unwrap().outage = None;
    }

    /// Batches holding a message for which `refuse` holds are answered `400`.
    pub fn refuse_messages_where(&self, refuse: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        self.state.lock().unwrap().refuse = Some(Box::new(refuse));
    }
}

struct Strict {
    state: Arc<Mutex<State>>,
}

impl Respond for Strict {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        if let Some(status) = state.outage {
            return ResponseTemplate::new(status).set_body_string("{\"error\":\"outage\"}");
        }
        match check(request) {
            Err(violation) => {
                state.violations.push(violation.clone());
                ResponseTemplate::new(400).set_body_string(violation)
            }
            Ok((write_key, sent_at, messages)) => {
                if let Some(refuse) = &state.refuse
                    && messages.iter().any(refuse)
                {
                    return ResponseTemplate::new(400)
                        .set_body_string("{\"success\":false,\"message\":\"refused message\"}");
                }
                let at = Instant::now();
                state
                    .accepted
                    .extend(messages.into_iter().map(|message| Received {
                        message,
                        write_key: write_key.clone(),
                        sent_at: sent_at.clone(),
                        at,
                    }));
                ResponseTemplate::new(200).set_body_string("{\"success\":true}")
            }
        }
    }
}

/// Segment's rules for a batch request; the write key, `sentAt` and messages.
fn check(request: &Request) -> Result<(String, String, Vec<Value>), String> {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if !header("content-type").starts_with("application/json") {
        return Err(format!("content-type is {:?}", header("content-type")));
    }
    let credentials = header("authorization")
        .strip_prefix("Basic ")
        .ok_or("no Basic authorization")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .map_err(|e| e.to_string())?;
    let decoded = String::from_utf8(decoded).map_err(|e| e.to_string())?;
    let write_key = decoded
        .strip_suffix(':')
        .ok_or("Basic credentials must be `writeKey:`")?;
    if write_key.is_empty() {
        return Err("empty write key".into());
    }
    if request.body.len() > 500_000 {
        return Err(format!(
            "batch of {} bytes is over 500 KB",
            request.body.len()
        ));
    }
    let body: Value =
        serde_json::from_slice(&request.body).map_err(|e| format!("invalid JSON: {e}"))?;
    let sent_at = body["sentAt"].as_str().ok_or("sentAt missing")?;
    chrono::DateTime::parse_from_rfc3339(sent_at).map_err(|_| "sentAt is not ISO-8601")?;
    let messages = body["batch"].as_array().ok_or("batch missing")?;
    if messages.is_empty() || messages.len() > 2500 {
        return Err(format!("batch of {} messages", messages.len()));
    }
    for message in messages {
        check_message(message)?;
    }
    Ok((write_key.to_owned(), sent_at.to_owned(), messages.clone()))
}

fn check_message(message: &Value) -> Result<(), String> {
    let size = serde_json::to_string(message).unwrap().len();
    if size > 32_000 {
        return Err(format!("message of {size} bytes is over 32 KB"));
    }
    let text = |field: &str| message[field].as_str().filter(|s| !s.is_empty());
    if message["type"] != "track" {
        return Err("type is not track".into());
    }
    text("event").ok_or("event missing")?;
    let message_id = text("messageId").ok_or("messageId missing")?;
    if message_id.chars().count() >= 100 {
        return Err("messageId of 100 characters or more".into());
    }
    if text("userId").is_none() && text("anonymousId").is_none() {
        return Err("neither userId nor anonymousId".into());
    }
    let timestamp = text("timestamp").ok_or("timestamp missing")?;
    chrono::DateTime::parse_from_rfc3339(timestamp).map_err(|_| "timestamp is not ISO-8601")?;
    if !message["properties"].is_object() {
        return Err("properties is not an object".into());
    }
    let integration = &message["context"]["integration"];
    if integration["name"] != "produktly" || integration["version"] != "1.0.0" {
        return Err(format!("context.integration is {integration}"));
    }
    if message["context"]["library"]["name"] != "produktly-segment" {
        return Err("context.library.name missing".into());
    }
    Ok(())
}
