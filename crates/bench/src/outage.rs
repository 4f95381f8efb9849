//! `bench --outage SECS`: a Segment incident under steady ingest. Batches of
//! events go to every workspace at a steady rate; the mock Segment answers
//! every request `500` for the outage, then `200` again while ingest goes on.
//! Measured: ingest latency before, during the drain and their ratio; the
//! requests Segment got during the outage; how long after Segment came back
//! each workspace was first served; how long the backlog took to arrive; the
//! end-to-end latency of a workspace idle during the outage while the
//! backlogs drain; and whether every event arrived exactly once by count.

use std::time::Duration;

use tokio::time::Instant;

use super::load::{self, Report, Target};
use super::mock::MockSegment;
use super::service::Service;
use super::{BenchArgs, BenchError, marked_body, scratch_database, thousands, tour_steps, wait_for_delivery};

/// Steady load before the outage, for the baseline latency.
const BASELINE: Duration = Duration::from_secs(20);
/// Steady load after Segment is back, while the backlog drains.
const DRAIN: Duration = Duration::from_secs(60);
/// The first part of the outage, while the region is found down; requests
/// are counted apart from those of the rest of it.
const ONSET: Duration = Duration::from_secs(10);
/// Marked single events per second to the idle workspace during the drain.
const IDLE_RATE: u32 = 5;

pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let epoch = Instant::now();
    let mock = MockSegment::start(epoch).await?;
    let database = scratch_database(args).await?;
    let service = Service::start(&database.url, database.dir.path(), &mock.url()).await?;
    let mut busy = Vec::new();
    for i in 0..args.workspaces.max(1) {
        let key = service.workspace(&format!("outage-{i}")).await?;
        busy.push(Target { addr: service.addr, path: "/v1/batch", key });
    }
    let idle = Target { addr: service.addr, path: "/v1/track", key: service.workspace("outage-idle").await? };
    let steady = Steady::new(busy, args.outage_rate, args.outage_batch);

    let baseline = steady.load(BASELINE, "s-2").await?;
    wait_for_delivery(&mock, baseline.events).await?;

    mock.set_failing(true);
    let onset = steady.load(ONSET, "s-outage").await?;
    let failed_at_onset = mock.failed();
    let rest = Duration::from_secs(args.outage).saturating_sub(ONSET);
    let outage = steady.load(rest, "s-outage").await?;
    let failed_after_onset = mock.failed() - failed_at_onset;
    let outage_events = onset.events + outage.events;

    mock.reset_first_served();
    mock.take_latency();
    mock.set_failing(false);
    let recovered = Instant::now();
    let recovered_us = epoch.elapsed().as_micros() as u64;
    let drain = {
        let steady = steady.clone();
        tokio::spawn(async move { steady.load(DRAIN, "s-2").await })
    };
    let idle_load =
        tokio::spawn(async move { load::open_loop(&[idle], IDLE_RATE, 1, DRAIN, 1, move || marked_body(epoch)).await });
    let mut caught_up = None;
    while caught_up.is_none() || !drain.is_finished() {
        if caught_up.is_none() && mock.marked() >= outage_events {
            caught_up = Some(recovered.elapsed());
        }
        if recovered.elapsed() > Duration::from_secs(600) {
            return Err(BenchError(format!("{} of {outage_events} queued events arrived in 600 s", mock.marked())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = drain.await.map_err(|e| BenchError(e.to_string()))??;
    let idle = idle_load.await.map_err(|e| BenchError(e.to_string()))??;
    let idle_latency = mock.take_latency();
    let mut resumed: Vec<f64> =
        mock.first_served().values().map(|&at| at.saturating_sub(recovered_us) as f64 / 1e6).collect();
    resumed.sort_by(f64::total_cmp);

    let sent = baseline.events + outage_events + drain.events + idle.events;
    wait_for_delivery(&mock, sent).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived = mock.accepted();
    let failures = baseline.failures + onset.failures + outage.failures + drain.failures + idle.failures;
    let caught_up = caught_up.unwrap_or_default().as_secs_f64();

    println!(
        "\nproduktly-segment {} outage bench: {:?} backend, {} workspaces, {} events/s in batches of {}, \
         Segment answering 500 for {} s\n",
        env!("CARGO_PKG_VERSION"),
        args.backend,
        args.workspaces.max(1),
        thousands(f64::from(args.outage_rate)),
        args.outage_batch,
        args.outage
    );
    println!("| figure | result |\n|---|---|");
    println!("| ingest before the outage | {} |", latency(&baseline));
    println!("| ingest during the outage | {} |", latency(&outage));
    println!("| ingest during the drain | {} ({:.2}× the baseline p99) |", latency(&drain), ratio(&drain, &baseline));
    println!(
        "| requests to Segment during the outage | {} in the first {} s, then {} in {} s ({:.2}/s) |",
        failed_at_onset,
        ONSET.as_secs(),
        failed_after_onset,
        rest.as_secs(),
        failed_after_onset as f64 / rest.as_secs_f64().max(1.0)
    );
    println!(
        "| workspaces resumed after Segment came back | {} of {}: median {:.2} s, last {:.2} s |",
        resumed.len(),
        args.workspaces.max(1) + 1,
        resumed.get(resumed.len() / 2).copied().unwrap_or(f64::NAN),
        resumed.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| backlog of the outage delivered | {} events {:.1} s after Segment came back ({} events/s) |",
        thousands(outage_events as f64),
        caught_up,
        thousands(outage_events as f64 / caught_up.max(0.001))
    );
    println!(
        "| idle workspace during the drain, ingest → Segment | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} events) |",
        idle_latency.value_at_quantile(0.5) as f64 / 1000.0,
        idle_latency.value_at_quantile(0.99) as f64 / 1000.0,
        idle_latency.max() as f64 / 1000.0,
        idle_latency.len()
    );
    println!(
        "| events acknowledged / arrived | {} / {} ({}); {} requests not accepted |",
        thousands(sent as f64),
        thousands(arrived as f64),
        if arrived == sent { "none lost, none twice".to_owned() } else { format!("{} apart", arrived.abs_diff(sent)) },
        failures
    );
    service.stop()?;
    drop(database);
    Ok(())
}

/// The steady ingest: batches spread over the busy workspaces, one
/// connection at least per workspace.
#[derive(Clone)]
struct Steady {
    targets: Vec<Target>,
    requests_per_sec: u32,
    batch: u64,
}

impl Steady {
    fn new(targets: Vec<Target>, events_per_sec: u32, batch: u32) -> Steady {
        let batch = batch.clamp(1, 500);
        Steady { targets, requests_per_sec: (events_per_sec / batch).max(1), batch: u64::from(batch) }
    }

    async fn load(&self, duration: Duration, step_id: &'static str) -> Result<Report, BenchError> {
        let connections = self.targets.len().max(4);
        let body = tour_steps(self.batch, step_id);
        load::open_loop(&self.targets, self.requests_per_sec, connections, duration, self.batch, move || body.clone())
            .await
    }
}

fn latency(report: &Report) -> String {
    format!("p50 {:.1} ms, p99 {:.1} ms", report.millis_at(0.5), report.millis_at(0.99))
}

fn ratio(report: &Report, baseline: &Report) -> f64 {
    report.millis_at(0.99) / baseline.millis_at(0.99).max(0.001)
}
