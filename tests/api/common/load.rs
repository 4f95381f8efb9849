//! Steady ingest as browsers send it: requests of one or more events, each
//! with its own messageId, at a steady pace, every answer recorded. A load
//! that retries sends what was refused (`503`) or got no answer again with
//! the same ids, as the SDK does, after `Retry-After`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The shape of one load: which endpoint, how many events a request, how
/// often, and whether refused events are sent again.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Events per request: 1 goes to `/v1/track`, more to `/v1/batch`.
    pub events: usize,
    pub every: Duration,
    pub retry: bool,
}

/// One request and its answer: a status, or `None` when none came (the
/// connection was cut or the request timed out).
#[derive(Clone, Debug)]
pub struct Attempt {
    pub sent: Instant,
    pub answered: Instant,
    pub status: Option<u16>,
    pub ids: Arc<Vec<String>>,
    /// Whether these ids were sent before.
    pub retry: bool,
}

/// How long one request may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before resending what got no answer.
const RESEND_AFTER_CUT: Duration = Duration::from_millis(200);
/// Longest `Retry-After` followed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

pub struct Load {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts sending to the service at `base` with the ingest key `key`;
    /// every messageId begins with `prefix`.
    pub fn start(base: &str, key: &str, prefix: &str, shape: Shape) -> Load {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let sender = Sender {
            http: reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap(),
            url: format!("{base}{}", if shape.events == 1 { "/v1/track" } else { "/v1/batch" }),
            key: key.to_owned(),
            attempts: attempts.clone(),
        };
        let task = tokio::spawn(sender.run(prefix.to_owned(), shape, stop.clone()));
        Load { attempts, stop, task }
    }

    /// Stops sending new events, lets a retrying load send again what is
    /// still refused (until it is taken, or `drain` passes), and returns every attempt.
    pub async fn stop(self, drain: Duration) -> Vec<Attempt> {
        self.stop.cancel();
        let _ = tokio::time::timeout(drain, self.task).await;
        self.attempts.lock().unwrap().clone()
    }
}

struct Sender {
    http: reqwest::Client,
    url: String,
    key: String,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

impl Sender {
    async fn run(self, prefix: String, shape: Shape, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(shape.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0.. {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let ids: Arc<Vec<String>> = Arc::new((0..shape.events).map(|i| format!("{prefix}-{n}-{i}")).collect());
            let mut retry = false;
            // A refused request is sent again (if the load retries) until it is
            // taken, also after `stop`: a browser keeps what it has not delivered.
            while let Some(wait) = self.send(&ids, retry).await.filter(|_| shape.retry) {
                tokio::time::sleep(wait).await;
                retry = true;
            }
        }
    }

    /// Sends the events once; how long to wait before sending them again, if
    /// they were not taken.
    async fn send(&self, ids: &Arc<Vec<String>>, retry: bool) -> Option<Duration> {
        let body = body(ids);
        let sent = Instant::now();
        let answer = self.http.post(&self.url).header("x-produktly-key", &self.key).json(&body).send().await;
        let (status, wait) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs)
                    .min(MAX_RETRY_AFTER);
                // Drain the body, so that the connection is reused.
                let _ = response.bytes().await;
                (Some(status), (status == 503).then_some(retry_after))
            }
            Err(_) => (None, Some(RESEND_AFTER_CUT)),
        };
        let attempt = Attempt { sent, answered: Instant::now(), status, ids: ids.clone(), retry };
        self.attempts.lock().unwrap().push(attempt);
        wait
    }
}

fn body(ids: &[String]) -> Value {
    let event =
        |id: &String| json!({"event": "tour_start", "userId": "u", "messageId": id, "properties": {"tour_id": "t"}});
    match ids {
        [one] => event(one),
        many => json!({"batch": many.iter().map(event).collect::<Vec<_>>()}),
    }
}

/// The ids answered `202`, in order.
pub fn acknowledged(attempts: &[Attempt]) -> Vec<String> {
    attempts.iter().filter(|a| a.status == Some(202)).flat_map(|a| a.ids.iter().cloned()).collect()
}
