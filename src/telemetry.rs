//! Logging: pretty in a terminal, JSON lines otherwise; level from `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stdout().is_terminal(),
        LogFormat::Json => true,
        LogFormat::Pretty => false,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Fails only if a subscriber is already set (tests): keep that one.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
