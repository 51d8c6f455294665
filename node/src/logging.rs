//! Structured logs with `tracing`: text or JSON lines on standard output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{ColorMode, LogFormat};

/// Installs the global subscriber. `RUST_LOG` refines the level (default `info`).
pub fn init(format: LogFormat, color: ColorMode) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = match color {
        ColorMode::Never => false,
        ColorMode::Always => true,
        ColorMode::Auto => std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(ansi).init(),
    }
}
