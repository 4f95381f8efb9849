//! A strict stand-in for Segment's Tracking API (`POST /v1/batch`) over real
//! HTTP: it checks every request against Segment's rules, logs every attempt
//! with its time, and records what it accepted; tests inject failures.

use std::collections::{HashMap, VecDeque};
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

/// One request, whatever the answer.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Instant,
    pub write_key: String,
    pub status: u16,
    pub messages: usize,
    /// The batch's size as JSON (inflated when it came compressed).
    pub bytes: usize,
    /// Whether it came with `Content-Encoding: gzip`.
    pub gzip: bool,
}

/// An injected answer: a status and headers.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    accepted: Vec<Received>,
    attempts: Vec<Attempt>,
    violations: Vec<String>,
    refuse: Option<Refusal>,
    /// Answers for the next requests, whatever they hold.
    script: VecDeque<Answer>,
    /// While set, every request is answered with this status.
    outage: Option<u16>,
    /// Outages of single write keys.
    key_outages: HashMap<String, u16>,
    /// Time taken before answering.
    delay: Option<Duration>,
    /// Time taken before answering requests of single write keys.
    key_delays: HashMap<String, Duration>,
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
            .respond_with(Strict { state: state.clone() })
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

    /// Every request so far, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.lock().unwrap().attempts.clone()
    }

    /// Requests that broke one of Segment's rules.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub async fn request_count(&self) -> usize {
        self.state.lock().unwrap().attempts.len()
    }

    /// Waits until at least `count` messages were accepted.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        super::eventually(timeout, &format!("{count} messages at the mock Segment"), || async {
            self.state.lock().unwrap().accepted.len() >= count
        })
        .await;
        self.accepted()
    }

    /// The next `times` requests get `status` (with the headers), whatever they hold.
    pub async fn fail_next(&self, times: usize, status: u16, headers: &[(&str, &str)]) {
        let headers: Vec<_> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let mut state = self.state.lock().unwrap();
        state.script.extend((0..times).map(|_| Answer { status, headers: headers.clone() }));
    }

    /// Answers every request with `status` until `end_outage`.
    pub fn start_outage(&self, status: u16) {
        self.state.lock().unwrap().outage = Some(status);
    }

    pub fn end_outage(&self) {
        self.state.lock().unwrap().outage = None;
    }

    /// Answers the requests of one write key with `status` until `end_key_outage`.
    pub fn start_key_outage(&self, write_key: &str, status: u16) {
        self.state.lock().unwrap().key_outages.insert(write_key.to_owned(), status);
    }

    pub fn end_key_outage(&self, write_key: &str) {
        self.state.lock().unwrap().key_outages.remove(write_key);
    }

    /// Answers every request only after `delay`.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Answers the requests of one write key only after `delay` (none: at once).
    pub fn set_key_delay(&self, write_key: &str, delay: Option<Duration>) {
        let mut state = self.state.lock().unwrap();
        match delay {
            Some(delay) => state.key_delays.insert(write_key.to_owned(), delay),
            None => state.key_delays.remove(write_key),
        };
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
        let at = Instant::now();
        let mut state = self.state.lock().unwrap();
        let gzip = is_gzip(request);
        let body = body_of(request);
        let bytes = body.as_ref().map_or(0, Vec::len);
        let checked = body.and_then(|body| check(request, &body));
        let write_key = checked.as_ref().map(|c| c.write_key.clone()).unwrap_or_default();
        let messages = checked.as_ref().map_or(0, |c| c.messages.len());
        let injected = state
            .script
            .pop_front()
            .or_else(|| state.outage.map(|status| Answer { status, headers: vec![] }))
            .or_else(|| state.key_outages.get(&write_key).map(|&status| Answer { status, headers: vec![] }));
        let answer = match (injected, checked) {
            (Some(answer), _) => answer,
            (None, Err(violation)) => {
                state.violations.push(violation);
                Answer { status: 400, headers: vec![] }
            }
            (None, Ok(checked)) if state.refuse.as_ref().is_some_and(|refuse| checked.messages.iter().any(refuse)) => {
                Answer { status: 400, headers: vec![] }
            }
            (None, Ok(checked)) => {
                state.accepted.extend(checked.messages.into_iter().map(|message| Received {
                    message,
                    write_key: checked.write_key.clone(),
                    sent_at: checked.sent_at.clone(),
                    at,
                }));
                Answer { status: 200, headers: vec![] }
            }
        };
        let delay = state.key_delays.get(&write_key).copied().or(state.delay);
        state.attempts.push(Attempt { at, write_key, status: answer.status, messages, bytes, gzip });
        let body = match answer.status {
            200 => "{\"success\":true}",
            400 => "{\"success\":false,\"message\":\"refused message\"}",
            _ => "{\"error\":\"injected\"}",
        };
        let mut response = ResponseTemplate::new(answer.status).set_body_string(body);
        for (name, value) in answer.headers {
            response = response.insert_header(name.as_str(), value.as_str());
        }
        match delay {
            Some(delay) => response.set_delay(delay),
            None => response,
        }
    }
}

fn is_gzip(request: &Request) -> bool {
    request.headers.get("content-encoding").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"))
}

/// The request body, inflated when it says it is gzip (as Segment's edge does).
fn body_of(request: &Request) -> Result<Vec<u8>, String> {
    if !is_gzip(request) {
        return Ok(request.body.clone());
    }
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&request.body[..]), &mut inflated)
        .map_err(|e| format!("the gzip body does not inflate: {e}"))?;
    Ok(inflated)
}

struct Checked {
    write_key: String,
    sent_at: String,
    messages: Vec<Value>,
}

/// Segment's rules for a batch request (`body` as inflated).
fn check(request: &Request, body: &[u8]) -> Result<Checked, String> {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !header("content-type").starts_with("application/json") {
        return Err(format!("content-type is {:?}", header("content-type")));
    }
    let credentials = header("authorization").strip_prefix("Basic ").ok_or("no Basic authorization")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).map_err(|e| e.to_string())?;
    let decoded = String::from_utf8(decoded).map_err(|e| e.to_string())?;
    let write_key = decoded.strip_suffix(':').ok_or("Basic credentials must be `writeKey:`")?;
    if write_key.is_empty() {
        return Err("empty write key".into());
    }
    if body.len() > 500_000 {
        return Err(format!("batch of {} bytes is over 500 KB", body.len()));
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let sent_at = body["sentAt"].as_str().ok_or("sentAt missing")?;
    chrono::DateTime::parse_from_rfc3339(sent_at).map_err(|_| "sentAt is not ISO-8601")?;
    let messages = body["batch"].as_array().ok_or("batch missing")?;
    if messages.is_empty() || messages.len() > 2500 {
        return Err(format!("batch of {} messages", messages.len()));
    }
    for message in messages {
        check_message(message)?;
    }
    Ok(Checked { write_key: write_key.to_owned(), sent_at: sent_at.to_owned(), messages: messages.clone() })
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
    if message["context"]["library"]["name"].as_str().is_none_or(str::is_empty) {
        return Err("context.library.name missing".into());
    }
    Ok(())
}
