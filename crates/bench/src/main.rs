//! `produktly-bench` (`cargo run --release -p produktly-bench -- …`): starts
//! the service on SQLite or PostgreSQL with a mock Segment on loopback, loads
//! it, and prints the figures: ingest throughput and latency with the CPU each
//! event cost (the service's and PostgreSQL's), backlog drain, end-to-end
//! latency, peak memory. The service is this binary run again as a child
//! process (`--serve`): the service's library, as `produktly-segment serve`
//! runs it, with the same allocator.

mod cpu;
mod curve;
mod engine;
mod floor;
mod load;
mod mock;
mod outage;
mod service;
mod slow_clients;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use cpu::CpuClock;
use load::{Report, Target, Until};
use mock::{MockSegment, SENT_PROPERTY};
use scratch_db::{Engine, ScratchDb};
use service::Service;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(String);

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> BenchError {
        BenchError(e.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
    /// PostgreSQL with the tables distributed on Citus: `--postgres-url` names
    /// a coordinator's database (`scripts/citus-lab.sh start` makes one); the
    /// benchmark's schema in it is distributed as `citus-distribute` does.
    Citus,
}

impl BenchBackend {
    /// Whether PostgreSQL's processes (all of this machine's) are measured too.
    pub fn on_postgres(self) -> bool {
        self != BenchBackend::Sqlite
    }
}

/// mimalloc, as the service binary has it (the figures are the service's).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What to measure, and how hard.
#[derive(Clone, Debug, clap::Parser)]
#[command(version, about = "Load produktly-segment on loopback with a mock Segment and print the figures")]
pub struct BenchArgs {
    /// The database the service runs on.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BenchBackend,
    /// PostgreSQL server to create the benchmark's database on.
    /// (Without TLS on loopback: the figures are the service's and the database's, not TLS's.)
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")]
    postgres_url: String,
    /// Seconds per ingest phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections of the throughput phases.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Events in the backlog to drain.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Workspaces the events are spread over.
    #[arg(long, default_value_t = 8)]
    workspaces: usize,
    /// Whole runs (each on a fresh service and database); the table shows medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Instead of the figures: the cost curve, single events paced at 100,
    /// 1,000 and 5,000 events/s and then at saturation, `--seconds` each;
    /// each load is also put on the bare HTTP floor endpoint.
    #[arg(long)]
    curve: bool,
    /// Instead of the figures: seconds of steady load, sampling memory and the
    /// queue (a soak).
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Events per second of the soak (single-event `/v1/track` requests).
    #[arg(long, default_value_t = 9_000)]
    soak_rate: u32,
    /// The soak's workspaces have no Segment integration: its events are
    /// authenticated, validated and answered, but not stored or delivered
    /// (what the HTTP path alone costs).
    #[arg(long)]
    soak_not_stored: bool,
    /// Instead of the figures: a Segment outage of this many seconds under
    /// steady ingest, then the recovery (see `--outage-rate`).
    #[arg(long, default_value_t = 0)]
    outage: u64,
    /// Events per second of the outage scenario, over `--workspaces`.
    #[arg(long, default_value_t = 8_000)]
    outage_rate: u32,
    /// Events per `/v1/batch` request of the outage scenario.
    #[arg(long, default_value_t = 250)]
    outage_batch: u32,
    /// Instead of the figures: this many connections that send their request
    /// heads a byte at a time (slowloris), with `--idle-clients` idle ones,
    /// against the service under `--file-limit`, while real requests go on.
    #[arg(long, default_value_t = 0)]
    slow_clients: usize,
    /// Idle keep-alive connections of the slow-clients scenario.
    #[arg(long, default_value_t = 500)]
    idle_clients: usize,
    /// The service's open-file limit (soft and hard) in the slow-clients scenario.
    #[arg(long, default_value_t = 4096)]
    file_limit: u64,
    /// Serves the bare HTTP floor endpoint on this address (the bench starts
    /// itself so; not for use by hand).
    #[arg(long, hide = true)]
    serve_http_floor: Option<std::net::SocketAddr>,
    /// Runs the service, configured from the environment (the bench starts
    /// itself so; not for use by hand).
    #[arg(long, hide = true)]
    serve: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = <BenchArgs as clap::Parser>::parse();
    if args.serve {
        return service::serve().await;
    }
    if let Some(address) = args.serve_http_floor {
        return report(floor::serve(address).await);
    }
    report(run(args).await)
}

fn report(outcome: Result<(), BenchError>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("produktly-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The benchmark's own database, removed when dropped.
async fn scratch_database(args: &BenchArgs) -> Result<ScratchDb, BenchError> {
    let failed = |e: &dyn std::fmt::Display| BenchError(format!("cannot create the database: {e}"));
    let engine = match args.backend {
        BenchBackend::Sqlite => Engine::Sqlite,
        BenchBackend::Postgres => Engine::Postgres,
        BenchBackend::Citus => {
            let db = ScratchDb::create_schema(&args.postgres_url, "produktly_bench").await.map_err(|e| failed(&e))?;
            let store = produktly_segment::store::Store::open(&db.url, 2, Duration::from_secs(10))
                .await
                .map_err(|e| failed(&e))?;
            store.distribute_on_citus().await.map_err(|e| failed(&e))?;
            return Ok(db);
        }
    };
    ScratchDb::create(engine, &args.postgres_url, "produktly_bench").await.map_err(|e| failed(&e))
}

/// One line of the results table: the figures measured, and how they read.
struct Row {
    figure: String,
    values: Vec<f64>,
    show: fn(&[f64]) -> String,
}

/// Runs the whole benchmark `runs` times, each on a fresh service and
/// database, and prints the median of each figure.
async fn run(args: BenchArgs) -> Result<(), BenchError> {
    if args.curve {
        return curve::run(&args).await;
    }
    if args.soak > 0 {
        return soak(&args).await;
    }
    if args.outage > 0 {
        return outage::run(&args).await;
    }
    if args.slow_clients > 0 {
        return slow_clients::run(&args).await;
    }
    let mut runs: Vec<Vec<Row>> = Vec::new();
    for run in 1..=args.runs.max(1) {
        eprintln!("run {run} of {}", args.runs.max(1));
        runs.push(run_once(&args).await?);
    }
    let medians: Vec<Row> = (0..runs[0].len())
        .map(|i| Row {
            figure: runs[0][i].figure.clone(),
            values: (0..runs[0][i].values.len())
                .map(|j| median(runs.iter().map(|rows| rows[i].values[j]).collect()))
                .collect(),
            show: runs[0][i].show,
        })
        .collect();
    print_table(&args, &medians);
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
}

async fn run_once(args: &BenchArgs) -> Result<Vec<Row>, BenchError> {
    let epoch = Instant::now();
    let mock = MockSegment::start(epoch).await?;
    let database = scratch_database(args).await?;
    let service = Service::start(&database.url, database.dir.path(), &mock.url()).await?;
    let mut keys = Vec::new();
    for i in 0..args.workspaces.max(1) {
        keys.push(service.workspace(&format!("bench-{i}")).await?);
    }
    let targets = |path: &'static str| -> Vec<Target> {
        keys.iter().map(|key| Target { addr: service.addr, path, key: key.clone() }).collect()
    };
    let phase = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    let mut sent = 0;

    let with_postgres = args.backend.on_postgres();
    let cpu_clock = || CpuClock::read(service.pid(), with_postgres);
    let shapes =
        [("/v1/track", "/v1/track", 1), ("/v1/batch of 10", "/v1/batch", 10), ("/v1/batch of 100", "/v1/batch", 100)];
    let mut durable = Vec::new();
    let mut single_durable_rate = f64::NAN;
    for (figure, path, events) in shapes {
        let started = cpu_clock();
        let report =
            load::closed_loop(&targets(path), body(events), events, args.connections, Until::Elapsed(phase)).await?;
        sent += report.events;
        // The whole life of the phase's events: until the mock has them all.
        wait_for_delivery(&mock, sent).await?;
        let cpu = cpu_clock().since(&started).per_event(report.events);
        rows.push(throughput_row(format!("{figure}, {} connections, durable", args.connections), &report, cpu));
        durable.push(cpu);
        if events == 1 {
            single_durable_rate = report.events_per_sec();
        }
    }

    // The floor under the durable figures: the same requests, authenticated
    // and validated, but not stored (the workspace has no Segment integration).
    let unstored = service.workspace_with("unstored", false).await?;
    let mut single_not_stored = f64::NAN;
    for ((figure, path, events), durable) in shapes.into_iter().zip(durable) {
        let target = Target { addr: service.addr, path, key: unstored.clone() };
        let started = cpu_clock();
        let report =
            load::closed_loop(&[target], body(events), events, args.connections, Until::Elapsed(phase)).await?;
        let cpu = cpu_clock().since(&started).per_event(report.events);
        if events == 1 {
            single_not_stored = cpu[0];
        }
        rows.push(throughput_row(format!("{figure}, {} connections, not stored", args.connections), &report, cpu));
        rows.push(Row {
            figure: format!("{figure}: durable − not stored"),
            values: vec![durable[0] - cpu[0], durable[1] - cpu[1]],
            show: |v| cpu_per_event(v[0], v[1]),
        });
    }

    // Under that, the least an HTTP request costs: a bare axum endpoint.
    let floor = floor_phase(args, phase).await?;
    rows.push(Row {
        figure: format!("/v1/track, {} connections, bare axum endpoint (the HTTP floor)", args.connections),
        values: vec![floor.0, floor.1, single_not_stored / floor.1],
        show: |v| format!("{} requests/s; CPU/request {:.1} µs; not stored is {:.2}× it", thousands(v[0]), v[1], v[2]),
    });

    // And under the store: the database engine alone, on the same statements.
    let engine = engine_phase(args).await?;
    rows.push(Row {
        figure: format!(
            "the engine alone: the store's statements, {} per commit, {} workspaces",
            engine::COMMIT_ROWS,
            args.workspaces
        ),
        values: vec![engine.events_per_sec, engine.client_micros, engine.postgres_micros],
        show: |v| format!("{} events/s; {}", thousands(v[0]), cpu_per_event_of("client", v[1], v[2])),
    });

    let started = cpu_clock();
    let report = load::open_loop(&targets("/v1/track")[..1], 10_000, 32, phase, 1, || body(1)).await?;
    sent += report.events;
    wait_for_delivery(&mock, sent).await?;
    let cpu = cpu_clock().since(&started);
    rows.push(Row {
        figure: "ingest latency at 10,000 events/s".into(),
        values: [report_values(&report), cpu.per_event(report.events).to_vec()].concat(),
        show: |v| {
            format!(
                "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} events/s){}; {}",
                v[1],
                v[2],
                v[3],
                thousands(v[0]),
                failures(v[4]),
                cpu_per_event(v[5], v[6])
            )
        },
    });

    mock.set_rate_limiting(true);
    let per_connection = args.backlog / 100 / 16;
    let backlog = load::closed_loop(&targets("/v1/batch"), body(100), 100, 16, Until::Requests(per_connection)).await?;
    mock.reset_span();
    mock.set_rate_limiting(false);
    sent += backlog.events;
    wait_for_delivery(&mock, sent).await?;
    let drain = Duration::from_micros(mock.span_micros()).as_secs_f64();
    rows.push(Row {
        figure: format!("drain a backlog of {} events ({} workspaces)", thousands(backlog.events as f64), keys.len()),
        values: vec![drain, backlog.events as f64 / drain, backlog.events_per_sec()],
        show: |v| format!("{:.1} s, {} events/s (loaded at {} events/s)", v[0], thousands(v[1]), thousands(v[2])),
    });

    mock.take_latency();
    let marked = move || marked_body(epoch);
    let report = load::open_loop(&targets("/v1/track")[..1], 1_000, 8, phase, 1, marked).await?;
    sent += report.events;
    wait_for_delivery(&mock, sent).await?;
    let end_to_end = mock.take_latency();
    rows.push(Row {
        figure: "end to end (ingest → mock Segment) at 1,000 events/s".into(),
        values: vec![
            end_to_end.value_at_quantile(0.5) as f64 / 1000.0,
            end_to_end.value_at_quantile(0.99) as f64 / 1000.0,
            end_to_end.len() as f64,
        ],
        show: |v| format!("p50 {:.1} ms, p99 {:.1} ms ({} events)", v[0], v[1], thousands(v[2])),
    });
    let peak = service.peak_rss().ok_or_else(|| BenchError("cannot read the service's memory".into()))?;
    rows.push(Row {
        figure: "peak RSS of the service".into(),
        values: vec![peak as f64 / 1_000_000.0],
        show: |v| format!("{:.0} MB", v[0]),
    });

    service.stop()?;
    // Beside it all, with the service stopped: the usual Node setup, for scale.
    if let Some((rate, cpu)) = node_peer_phase(args, phase, &mock).await {
        rows.push(Row {
            figure: format!(
                "/v1/track, {} connections, express + @segment/analytics-node (not durable)",
                args.connections
            ),
            values: vec![rate, cpu, single_durable_rate / rate],
            show: |v| {
                format!(
                    "{} requests/s; CPU/request {:.1} µs; durable is {:.1}× its throughput",
                    thousands(v[0]),
                    v[1],
                    v[2]
                )
            },
        });
    }

    drop(database);
    Ok(rows)
}

/// The bare HTTP floor endpoint, as a process of its own, under the same
/// load as `/v1/track`: its requests/s and CPU per request.
async fn floor_phase(args: &BenchArgs, phase: Duration) -> Result<(f64, f64), BenchError> {
    let (report, cpu) = floor_process(|target| async move { closed_loop_on(&[target], args, phase).await }).await?;
    Ok((report.events_per_sec(), cpu))
}

/// Starts the bare HTTP floor endpoint as a process of its own, puts `load`
/// on it and stops it: the report, and CPU per request.
pub(crate) async fn floor_process<L: std::future::Future<Output = Result<Report, BenchError>>>(
    load: impl FnOnce(Target) -> L,
) -> Result<(Report, f64), BenchError> {
    let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.args(["--serve-http-floor", &address.to_string()]).env("RUST_LOG", "warn");
    load_process(command, address, load, |_| async {}).await
}

/// Single events in a closed loop of `args.connections` for `phase` (saturation).
pub(crate) async fn closed_loop_on(
    targets: &[Target],
    args: &BenchArgs,
    phase: Duration,
) -> Result<Report, BenchError> {
    load::closed_loop(targets, body(1), 1, args.connections, Until::Elapsed(phase)).await
}

/// The usual Node setup (express and @segment/analytics-node, in memory, not
/// durable: `scripts/node-peer`) under the same load, sending to `mock`: its
/// requests/s and CPU per request until the mock has them. `None` without
/// `node`, or when its packages are not installed (`npm ci` there).
async fn node_peer_phase(args: &BenchArgs, phase: Duration, mock: &MockSegment) -> Option<(f64, f64)> {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/node-peer");
    if !folder.join("node_modules").is_dir() {
        eprintln!("the Node peer is left out: run `npm ci` in {}", folder.display());
        return None;
    }
    let address = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?;
    let mut command = std::process::Command::new("node");
    command.current_dir(&folder).args(["server.mjs", &address.port().to_string(), &mock.url()]);
    let before = mock.accepted();
    let delivered = |events: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while mock.accepted() < before + events && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    match load_process(
        command,
        address,
        |target| async move { closed_loop_on(&[target], args, phase).await },
        delivered,
    )
    .await
    {
        Ok((report, cpu)) => Some((report.events_per_sec(), cpu)),
        Err(e) => {
            eprintln!("the Node peer is left out: {e}");
            None
        }
    }
}

/// Starts `command` (a server on `address`), puts `load` on its
/// `/v1/track` as on the service's, runs `after` before reading its CPU, and
/// stops it: the report, and CPU per request. `after` is given the requests sent.
async fn load_process<L, F>(
    mut command: std::process::Command,
    address: std::net::SocketAddr,
    load: impl FnOnce(Target) -> L,
    after: impl FnOnce(u64) -> F,
) -> Result<(Report, f64), BenchError>
where
    L: std::future::Future<Output = Result<Report, BenchError>>,
    F: std::future::Future<Output = ()>,
{
    let mut child = command.stdin(std::process::Stdio::null()).spawn()?;
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !up {
        let _ = child.kill();
        return Err(BenchError(format!("{command:?} did not start")));
    }
    let target = Target { addr: address, path: "/v1/track", key: "reference".into() };
    let started = CpuClock::read(child.id(), false);
    let report = load(target).await;
    after(report.as_ref().map_or(0, |r| r.events)).await;
    let cpu = CpuClock::read(child.id(), false).since(&started);
    let _ = child.kill();
    let _ = child.wait();
    let report = report?;
    let per_request = cpu.per_event(report.events)[0];
    Ok((report, per_request))
}

/// The engine's queue life on a fresh database of the store's schema.
async fn engine_phase(args: &BenchArgs) -> Result<engine::EngineFigure, BenchError> {
    let database = scratch_database(args).await?;
    // The store creates the schema, as for the service.
    drop(
        produktly_segment::store::Store::open(&database.url, 1, Duration::from_secs(5))
            .await
            .map_err(|e| BenchError(e.to_string()))?,
    );
    let payload = stored_payload();
    let (workspaces, url, path) = (args.workspaces.max(1), database.url.clone(), database.sqlite_path());
    let backend = args.backend;
    let figure = tokio::task::spawn_blocking(move || match backend {
        BenchBackend::Sqlite => engine::sqlite(&path, workspaces, &payload),
        BenchBackend::Postgres | BenchBackend::Citus => engine::postgres(&url, workspaces, &payload),
    })
    .await
    .map_err(|e| BenchError(e.to_string()))?;
    drop(database);
    figure
}

/// Steady load for `args.soak` seconds; every 30 s a sample of the service's
/// memory, the queue depth and what reached the mock.
async fn soak(args: &BenchArgs) -> Result<(), BenchError> {
    let epoch = Instant::now();
    let mock = MockSegment::start(epoch).await?;
    let database = scratch_database(args).await?;
    let service = Arc::new(Service::start(&database.url, database.dir.path(), &mock.url()).await?);
    let mut targets = Vec::new();
    for i in 0..args.workspaces.max(1) {
        let key = service.workspace_with(&format!("soak-{i}"), !args.soak_not_stored).await?;
        targets.push(Target { addr: service.addr, path: "/v1/track", key });
    }
    let (duration, rate) = (Duration::from_secs(args.soak), args.soak_rate.max(1));
    let started = CpuClock::read(service.pid(), args.backend.on_postgres());
    let load = tokio::spawn(async move { load::open_loop(&targets, rate, 32, duration, 1, || body(1)).await });
    println!("| minute | RSS | queue depth | delivered |");
    println!("|--------|-----|-------------|-----------|");
    let mut rss = Vec::new();
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_secs(30).min(duration)).await;
        let current = service.current_rss().unwrap_or(0);
        rss.push(current);
        let depth = service.queue_depth().await.unwrap_or(-1);
        println!(
            "| {:.1} | {} MB | {} | {} |",
            epoch.elapsed().as_secs_f64() / 60.0,
            current / 1_000_000,
            depth,
            thousands(mock.accepted() as f64)
        );
    }
    let report = load.await.map_err(|e| BenchError(e.to_string()))??;
    if !args.soak_not_stored {
        wait_for_delivery(&mock, report.events).await?;
    }
    let [service_cpu, postgres_cpu] =
        CpuClock::read(service.pid(), started.has_postgres()).since(&started).per_event(report.events);
    println!(
        "\nsoak: {} s at {} events/s ({:?} backend): {} events accepted, {} requests not accepted; \
         ingest p50 {:.1} ms, p99 {:.1} ms; {}; RSS first {} MB, last {} MB, peak {} MB; {}",
        args.soak,
        args.soak_rate,
        args.backend,
        thousands(report.events as f64),
        report.failures,
        report.millis_at(0.5),
        report.millis_at(0.99),
        cpu_per_event(service_cpu, postgres_cpu),
        rss.first().copied().unwrap_or(0) / 1_000_000,
        rss.last().copied().unwrap_or(0) / 1_000_000,
        service.peak_rss().unwrap_or(0) / 1_000_000,
        if args.soak_not_stored { "none stored" } else { "all delivered" }
    );
    Arc::try_unwrap(service).map_err(|_| BenchError("the service is still in use".into()))?.stop()?;
    drop(database);
    Ok(())
}

/// A closed-loop phase's row: events/s, latency and CPU per event.
fn throughput_row(figure: String, report: &Report, cpu: [f64; 2]) -> Row {
    Row {
        figure,
        values: [report_values(report), cpu.to_vec()].concat(),
        show: |v| {
            format!(
                "{} events/s; p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms{}; {}",
                thousands(v[0]),
                v[1],
                v[2],
                v[3],
                failures(v[4]),
                cpu_per_event(v[5], v[6])
            )
        },
    }
}

/// events/s, p50, p95, p99 (ms), requests not accepted.
fn report_values(report: &Report) -> Vec<f64> {
    vec![
        report.events_per_sec(),
        report.millis_at(0.5),
        report.millis_at(0.95),
        report.millis_at(0.99),
        report.failures as f64,
    ]
}

/// The message the service stores for the bench's `tour_step` (as ingest
/// builds it: the browser's fields, the user agent and address, the
/// integration and library), the payload of the engine's rows.
fn stored_payload() -> String {
    use produktly_segment::delivery::segment::{Context, TrackMessage};
    let sent: Value = serde_json::from_slice(&body(1)).expect("the bench's body is JSON");
    let mut context = Context::new(sent["context"].as_object().cloned().unwrap_or_default());
    context.set("userAgent", json!("produktly-segment-bench/1.0"));
    context.set("ip", json!("127.0.0.1"));
    let properties = sent["properties"].as_object().cloned().unwrap_or_default();
    let message_id = uuid::Uuid::new_v4().to_string();
    TrackMessage::new("tour_step", &message_id, Some("anon-0"), "2026-12-01T10:00:00.000Z", &properties, &context)
        .to_json()
}

/// A body of `events` valid events (one event, or a batch).
fn body(events: u64) -> Bytes {
    tour_steps(events, "s-2")
}

/// A body of `events` `tour_step` events (one, or a batch) of step `step_id`.
fn tour_steps(events: u64, step_id: &str) -> Bytes {
    let event = |i: u64| {
        json!({"event": "tour_step", "anonymousId": format!("anon-{i}"), "userId": format!("user-{i}"),
               "properties": {"tour_id": "welcome", "step_id": step_id, "step_index": 2, "tour_name": "Welcome"},
               "context": {"page": {"url": "https://app.example.com/dashboard", "path": "/dashboard"}, "locale": "en-US"}})
    };
    let value = if events == 1 { event(0) } else { json!({"batch": (0..events).map(event).collect::<Vec<Value>>()}) };
    Bytes::from(value.to_string())
}

/// One event marked with the time it is sent, for the end-to-end latency.
fn marked_body(epoch: Instant) -> Bytes {
    let sent = epoch.elapsed().as_micros() as u64;
    let value =
        json!({"event": "tour_start", "userId": "user-e2e", "properties": {"tour_id": "t", SENT_PROPERTY: sent}});
    Bytes::from(value.to_string())
}

/// Waits until the mock has every event sent so far.
async fn wait_for_delivery(mock: &MockSegment, sent: u64) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while mock.accepted() < sent {
        if Instant::now() > deadline {
            return Err(BenchError(format!("only {} of {sent} events reached the mock", mock.accepted())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The CPU an event cost, received to delivered: the service's, and
/// PostgreSQL's (NaN on SQLite).
fn cpu_per_event(service: f64, postgres: f64) -> String {
    cpu_per_event_of("service", service, postgres)
}

/// CPU per event of `who` (the service, or the engine run's own client), and
/// PostgreSQL's when it was measured.
fn cpu_per_event_of(who: &str, own: f64, postgres: f64) -> String {
    if postgres.is_nan() {
        format!("CPU/event: {who} {own:.1} µs")
    } else {
        format!("CPU/event: {who} {own:.1} µs, PostgreSQL {postgres:.1} µs")
    }
}

fn failures(count: f64) -> String {
    if count == 0.0 { String::new() } else { format!("; {count:.0} requests not accepted") }
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(args: &BenchArgs, rows: &[Row]) {
    println!(
        "\nproduktly-segment {} bench: {:?} backend, {} s per phase, median of {} runs, on {} CPUs\n",
        env!("CARGO_PKG_VERSION"),
        args.backend,
        args.seconds,
        args.runs.max(1),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let width = rows.iter().map(|r| r.figure.chars().count()).max().unwrap_or(0);
    println!("| {:width$} | result |", "figure");
    println!("|{}|--------|", "-".repeat(width + 2));
    for row in rows {
        println!("| {:width$} | {} |", row.figure, (row.show)(&row.values));
    }
}
