//! The Prometheus metrics of one service instance (its own registry, so that
//! several instances in one process, as in tests, do not mix their counts).

use std::collections::HashSet;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::domain::{DeadLetterReason, Region};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabel {
    pub region: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

/// The store's calls whose time `store_latency_seconds` shows, by `operation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOperation {
    /// An ingest commit.
    Enqueue,
    /// A delivery round's read of queued events.
    Read,
    /// Deleting what Segment took.
    Ack,
}

impl StoreOperation {
    fn label(self) -> &'static str {
        match self {
            StoreOperation::Enqueue => "enqueue",
            StoreOperation::Read => "read",
            StoreOperation::Ack => "ack",
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub events_received: Counter,
    pub events_accepted: Counter,
    /// Accepted events not stored again: their messageId was already queued (retries).
    pub events_already_queued: Counter,
    pub events_rejected: Family<Reason, Counter>,
    /// Ingest requests refused before their workspace was known (no activity can show them).
    pub refused_unattributed: Family<Reason, Counter>,
    pub events_discarded: FrequentLabels<Reason>,
    pub ingest_responses: FrequentLabels<Status>,
    /// Requests whose `X-Forwarded-For` was ignored (the peer is not a trusted proxy).
    pub forwarded_for_ignored: Counter,
    /// Age of the oldest undelivered event, in seconds (0: none).
    pub queue_oldest_age: Gauge,
    /// 1 when the janitor's last sweep reached the store, else 0.
    pub store_up: Gauge,
    pub events_delivered: Counter,
    pub events_retried: Counter,
    pub events_dead_lettered: Family<Reason, Counter>,
    pub batch_size: Histogram,
    /// Segment's answers by status; status 0 stands for no answer (timeout, connection error).
    pub segment_responses: Family<Status, Counter>,
    /// 1 while a Segment region answers, 0 while it is down (as all instances share it).
    pub segment_region_up: Family<RegionLabel, Gauge>,
    pub delivery_latency: Histogram,
    pub store_latency: HistogramFamily<Operation>,
    /// Client connections open now, and the most that may be.
    pub http_connections_open: Gauge,
    pub http_connections_limit: Gauge,
    pub http_connections_closed: Family<Reason, Counter>,
    /// Accepts that failed for want of descriptors or memory.
    pub http_accept_errors: Counter,
    /// Erasures of a person's data (`POST …/erasures`), and workspaces deleted.
    pub erasures: Counter,
    pub workspaces_deleted: Counter,
}

impl Metrics {
    /// The metrics, with those that other parts keep themselves (the queue's
    /// depth, the database's connection counts) read from their `collectors`
    /// at each scrape.
    pub fn new(collectors: impl IntoIterator<Item = Box<dyn Collector>>) -> Metrics {
        let mut r = Registry::with_prefix("produktly");
        for collector in collectors {
            r.register_collector(collector);
        }
        let r = &mut r;
        Metrics {
            events_received: registered(r, "events_received", "Events received by ingest", Counter::default()),
            events_accepted: registered(r, "events_accepted", "Events committed to the queue", Counter::default()),
            events_already_queued: registered(
                r,
                "events_already_queued",
                "Accepted events not stored again: their messageId was already queued (a retry of a commit whose \
                 answer was lost)",
                Counter::default(),
            ),
            events_rejected: registered(r, "events_rejected", "Events refused at ingest, by reason", Family::default()),
            refused_unattributed: registered(
                r,
                "ingest_refused_unattributed",
                "Ingest requests refused before their workspace was known (a missing or wrong key, a client's rate limit), by reason",
                Family::default(),
            ),
            events_discarded: FrequentLabels::new(
                registered(
                    r,
                    "events_discarded",
                    "Valid events not stored, by reason (no enabled Segment integration)",
                    Family::default(),
                ),
                [NOT_CONFIGURED, NOT_SELECTED].map(|reason| Reason { reason }),
            ),
            ingest_responses: FrequentLabels::new(
                registered(r, "ingest_responses", "Ingest responses by HTTP status", Family::default()),
                [Status { status: 202 }],
            ),
            forwarded_for_ignored: registered(
                r,
                "ingest_forwarded_for_ignored",
                "Requests whose X-Forwarded-For was ignored: the peer is not in ingest.trusted_proxies",
                Counter::default(),
            ),
            queue_oldest_age: registered(
                r,
                "queue_oldest_age_seconds",
                "Age of the oldest undelivered event (0: none waits)",
                Gauge::default(),
            ),
            store_up: registered(
                r,
                "store_up",
                "1 when the last periodic sweep reached the database, 0 when it failed",
                Gauge::default(),
            ),
            events_delivered: registered(r, "events_delivered", "Events Segment accepted", Counter::default()),
            events_retried: registered(
                r,
                "events_retried",
                "Events returned to the queue for a later attempt",
                Counter::default(),
            ),
            events_dead_lettered: registered(
                r,
                "events_dead_lettered",
                "Events moved to the dead letters, by reason",
                Family::default(),
            ),
            batch_size: registered(
                r,
                "segment_batch_size",
                "Events per batch sent to Segment",
                Histogram::new(exponential_buckets(1.0, 4.0, 7)),
            ),
            segment_responses: registered(
                r,
                "segment_responses",
                "Segment's answers by HTTP status (0: no answer)",
                Family::default(),
            ),
            segment_region_up: registered(
                r,
                "segment_region_up",
                "1 while the Segment region answers, 0 while it is down and only probed",
                Family::default(),
            ),
            delivery_latency: registered(
                r,
                "delivery_latency_seconds",
                "Time from ingest to Segment's acceptance",
                Histogram::new(exponential_buckets(0.01, 3.0, 12)),
            ),
            store_latency: registered(
                r,
                "store_latency_seconds",
                "Store operation latency",
                Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 3.0, 10))),
            ),
            http_connections_open: registered(
                r,
                "http_connections_open",
                "Client connections open now",
                Gauge::default(),
            ),
            http_connections_limit: registered(
                r,
                "http_connections_limit",
                "Most client connections open at once (http.max_connections, below the open-file limit)",
                Gauge::default(),
            ),
            http_connections_closed: registered(
                r,
                "http_connections_closed",
                "Client connections closed, by reason: header_timeout, idle_timeout, crowded, shutdown, client, malformed",
                Family::default(),
            ),
            http_accept_errors: registered(
                r,
                "http_accept_errors",
                "Failed accepts of client connections (out of file descriptors or memory)",
                Counter::default(),
            ),
            erasures: registered(r, "erasures", "Erasures of a person's data within a workspace", Counter::default()),
            workspaces_deleted: registered(
                r,
                "workspaces_deleted",
                "Workspaces deleted with all their data",
                Counter::default(),
            ),
            registry: std::mem::take(r),
        }
    }

    pub fn rejected(&self, reason: &'static str) {
        self.events_rejected.get_or_create(&Reason { reason }).inc();
    }

    pub fn refused_unattributed(&self, reason: &'static str) {
        self.refused_unattributed.get_or_create(&Reason { reason }).inc();
    }

    pub fn dead_lettered(&self, reason: DeadLetterReason, count: u64) {
        self.events_dead_lettered.get_or_create(&Reason { reason: reason.as_str() }).inc_by(count);
    }

    pub fn set_region_up(&self, region: Region, up: bool) {
        self.segment_region_up.get_or_create(&RegionLabel { region: region.as_str() }).set(i64::from(up));
    }

    pub fn store_op(&self, operation: StoreOperation, elapsed: Duration) {
        let label = Operation { operation: operation.label() };
        self.store_latency.get_or_create(&label).observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools that
    /// do not read OpenMetrics (`promtool check metrics`, older agents): the
    /// HELP and TYPE of a counter name its `_total` series, and no `# EOF`.
    pub fn encode_classic(&self) -> String {
        let open = self.encode();
        let counters: HashSet<&str> =
            open.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
        let mut text = String::with_capacity(open.len());
        for line in open.lines().filter(|line| *line != "# EOF") {
            let renamed = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
                let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
                counters.contains(name).then(|| format!("{prefix}{name}_total {rest}"))
            });
            text.push_str(renamed.as_deref().unwrap_or(line));
            text.push('\n');
        }
        text
    }
}

/// Why valid events are not stored (`events_discarded`'s reasons): the
/// workspace has no enabled Segment integration, or does not forward the event.
pub const NOT_CONFIGURED: &str = "segment_not_configured";
pub const NOT_SELECTED: &str = "event_not_selected";

/// A counter family whose frequent label sets are looked up once: counting
/// one of them on the ingest path is an increment, without hashing labels.
pub struct FrequentLabels<L> {
    family: Family<L, Counter>,
    frequent: Vec<(L, Counter)>,
}

impl<L: EncodeLabelSet + Clone + Eq + std::hash::Hash> FrequentLabels<L> {
    fn new(family: Family<L, Counter>, frequent: impl IntoIterator<Item = L>) -> FrequentLabels<L> {
        let frequent =
            frequent.into_iter().map(|labels| (labels.clone(), family.get_or_create(&labels).clone())).collect();
        FrequentLabels { family, frequent }
    }

    pub fn inc_by(&self, labels: &L, count: u64) {
        match self.frequent.iter().find(|(known, _)| known == labels) {
            Some((_, counter)) => counter.inc_by(count),
            None => self.family.get_or_create(labels).inc_by(count),
        };
    }
}

fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}
