//! The number of undelivered events, as this instance knows it: what the
//! committer stored, less what delivery and the admin API removed, reset to
//! the store's own count by the janitor. Ingest refuses new events while it
//! is at `ingest.max_queue_depth`; the metrics only read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Clone, Debug, Default)]
pub struct QueueDepth(Arc<AtomicI64>);

impl QueueDepth {
    pub fn added(&self, events: u64) {
        self.0.fetch_add(i64::try_from(events).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Never below zero: other instances' commits and a count racing with
    /// acks would otherwise take it there until the janitor's next count.
    pub fn removed(&self, events: u64) {
        let events = i64::try_from(events).unwrap_or(i64::MAX);
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |depth| Some((depth - events).max(0)));
    }

    /// The store's own count (of every instance's events).
    pub fn counted(&self, events: u64) {
        self.0.store(i64::try_from(events).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }

    /// `produktly_queue_depth`, read at each scrape.
    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(DepthCollector(self.clone()))
    }
}

#[derive(Debug)]
struct DepthCollector(QueueDepth);

impl Collector for DepthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(self.0.get() as i64);
        let metric =
            encoder.encode_descriptor("queue_depth", "Undelivered events in the store", None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_follows_adds_and_removals_and_never_goes_below_zero() {
        let depth = QueueDepth::default();
        depth.added(10);
        depth.removed(3);
        assert_eq!(depth.get(), 7);
        depth.removed(20);
        assert_eq!(depth.get(), 0);
        depth.counted(42);
        assert_eq!(depth.get(), 42);
    }
}
