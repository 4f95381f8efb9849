//! The `produktly-segment` command: `serve` (the default), `migrate`,
//! `citus-distribute`, `reseal`, `docs`, `healthcheck`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use produktly_segment::domain::partner_docs;
use produktly_segment::secrets::Secrets;
use produktly_segment::{Settings, admin, app, store, telemetry};

/// Produktly's Segment Event Cloud Source. Configuration: config/default.toml,
/// the file named by PRODUKTLY_CONFIG, then PRODUKTLY_* environment variables.
/// mimalloc: fewer cycles per allocation than the system allocator on the
/// request path, and less fragmentation (so a flatter RSS) under churn.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ingest, admin and ops APIs and deliver events (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// On a Citus coordinator: apply the migrations, then distribute the
    /// per-workspace tables by workspace_id and make the shared ones reference
    /// tables (docs/operations.md, "Past one PostgreSQL"). Refuses elsewhere.
    CitusDistribute,
    /// Re-seal every stored write key with the current PRODUKTLY_SECRET_KEY
    /// (give the old key in PRODUKTLY_PREVIOUS_SECRET_KEYS) and exit.
    Reseal,
    /// Write the event and property tables of the partner documentation from
    /// the catalog (with --check: only tell whether they are up to date).
    Docs {
        #[arg(long)]
        check: bool,
    },
    /// Ask the service on PRODUKTLY_LISTEN whether it is alive (GET /healthz);
    /// exits 0 if so. For container health checks, where no curl is at hand.
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("produktly-segment: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(settings.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::CitusDistribute => citus_distribute(settings).await,
        Command::Reseal => reseal(settings).await,
        Command::Docs { check } => docs(check),
        Command::Healthcheck => healthcheck(&settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    Ok(app::serve_until_signalled(settings).await?)
}

async fn migrate(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    store::connect(&settings).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn citus_distribute(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let done = store::connect(&settings).await?.distribute_on_citus().await?;
    tracing::info!(reference = ?done.reference, distributed = ?done.distributed, "tables distributed on Citus");
    Ok(())
}

async fn reseal(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let secrets = Secrets::resolve(&settings)?;
    let store = store::connect(&settings).await?;
    let report = admin::reseal_write_keys(store.as_ref(), &secrets.sealer).await?;
    tracing::info!(resealed = report.resealed, current = report.current, failed = report.failed.len(), "reseal done");
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} write keys could not be opened: {:?}", report.failed.len(), report.failed).into())
    }
}

fn docs(check: bool) -> Result<(), Box<dyn std::error::Error>> {
    let document = std::fs::read_to_string(partner_docs::DOCUMENT)?;
    let updated = partner_docs::with_tables(&document)?;
    if updated == document {
        println!("{} is up to date", partner_docs::DOCUMENT);
    } else if check {
        return Err(format!("{} is not up to date: run `produktly-segment docs`", partner_docs::DOCUMENT).into());
    } else {
        std::fs::write(partner_docs::DOCUMENT, updated)?;
        println!("{} updated", partner_docs::DOCUMENT);
    }
    Ok(())
}

async fn healthcheck(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let mut address = settings.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?
        .get(format!("http://{address}/healthz"))
        .send()
        .await?;
    if response.status().is_success() { Ok(()) } else { Err(format!("/healthz answered {}", response.status()).into()) }
}
