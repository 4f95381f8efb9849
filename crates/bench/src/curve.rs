//! `bench --curve`: what an event costs at the steady rates customers send,
//! not only at saturation. On one service and store, single-event `/v1/track`
//! requests paced at 100, 1,000 and 5,000 events/s over 32 keep-alive
//! connections, then a closed loop of 64 connections; for each, the CPU an
//! event cost (the service's, and PostgreSQL's), Segment requests per 1,000
//! events, the ingest p99 and the end-to-end p50 and p99 (`202` to the mock).
//! Each load is then put on the bare HTTP floor endpoint as well, for what an
//! axum request costs at that rate on this machine whatever the service does.

use std::time::Duration;

use tokio::time::Instant;

use crate::cpu::CpuClock;
use crate::load::{self, Target};
use crate::mock::MockSegment;
use crate::service::Service;
use crate::{
    BenchArgs, BenchError, body, closed_loop_on, floor_process, marked_body, scratch_database, thousands,
    wait_for_delivery,
};

/// The paced rates, in events per second.
const RATES: [u32; 3] = [100, 1_000, 5_000];
/// Keep-alive connections of the paced phases, as browsers' requests arrive.
const PACED_CONNECTIONS: usize = 32;

struct Point {
    load: String,
    events: u64,
    service_micros: f64,
    postgres_micros: f64,
    floor_micros: f64,
    requests_per_thousand: f64,
    ingest_p99_ms: f64,
    end_to_end_ms: Option<(f64, f64)>,
}

pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let epoch = Instant::now();
    let mock = MockSegment::start(epoch).await?;
    let database = scratch_database(args).await?;
    let service = Service::start(&database.url, database.dir.path(), &mock.url()).await?;
    let mut targets = Vec::new();
    for i in 0..args.workspaces.max(1) {
        targets.push(Target {
            addr: service.addr,
            path: "/v1/track",
            key: service.workspace(&format!("curve-{i}")).await?,
        });
    }
    let with_postgres = args.backend.on_postgres();
    let phase = Duration::from_secs(args.seconds);
    let mut sent = 0;
    let mut points = Vec::new();
    for rate in RATES.into_iter().map(Some).chain([None]) {
        let requests_before = mock.requests();
        mock.take_latency();
        let started = CpuClock::read(service.pid(), with_postgres);
        let report = match rate {
            Some(rate) => {
                load::open_loop(&targets, rate, PACED_CONNECTIONS, phase, 1, move || marked_body(epoch)).await?
            }
            None => closed_loop_on(&targets, args, phase).await?,
        };
        sent += report.events;
        wait_for_delivery(&mock, sent).await?;
        let [service_micros, postgres_micros] =
            CpuClock::read(service.pid(), with_postgres).since(&started).per_event(report.events);
        let latency = mock.take_latency();
        let floor_micros = floor_at(rate, args, phase).await?;
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        points.push(Point {
            load: match rate {
                Some(rate) => format!("{} events/s", thousands(rate as f64)),
                None => format!(
                    "saturation ({} connections, {} events/s)",
                    args.connections,
                    thousands(report.events_per_sec())
                ),
            },
            events: report.events,
            service_micros,
            postgres_micros,
            floor_micros,
            requests_per_thousand: (mock.requests() - requests_before) as f64 * 1000.0 / report.events.max(1) as f64,
            ingest_p99_ms: report.millis_at(0.99),
            end_to_end_ms: rate.map(|_| (ms(0.5), ms(0.99))),
        });
    }
    service.stop()?;
    drop(database);
    print(args, &points);
    Ok(())
}

/// The bare HTTP floor endpoint's CPU per request under the same load:
/// paced at `rate`, or a closed loop at saturation.
async fn floor_at(rate: Option<u32>, args: &BenchArgs, phase: Duration) -> Result<f64, BenchError> {
    let (_, micros) = floor_process(|target| async move {
        match rate {
            Some(rate) => load::open_loop(&[target], rate, PACED_CONNECTIONS, phase, 1, || body(1)).await,
            None => closed_loop_on(&[target], args, phase).await,
        }
    })
    .await?;
    Ok(micros)
}

fn print(args: &BenchArgs, points: &[Point]) {
    println!(
        "\nproduktly-segment cost curve: {:?} backend, {} s per rate, {} workspaces\n",
        args.backend, args.seconds, args.workspaces
    );
    println!(
        "| load | events | service CPU/event | PostgreSQL CPU/event | bare HTTP floor CPU/request | Segment requests per 1,000 events | ingest p99 | end to end p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for point in points {
        let postgres =
            if point.postgres_micros.is_nan() { "—".to_owned() } else { format!("{:.1} µs", point.postgres_micros) };
        let end_to_end = point.end_to_end_ms.map_or("—".to_owned(), |(p50, p99)| format!("{p50:.0} / {p99:.0} ms"));
        println!(
            "| {} | {} | {:.1} µs | {} | {:.1} µs | {:.1} | {:.1} ms | {} |",
            point.load,
            thousands(point.events as f64),
            point.service_micros,
            postgres,
            point.floor_micros,
            point.requests_per_thousand,
            point.ingest_p99_ms,
            end_to_end
        );
    }
}
