//! Log output: human-readable text or JSON lines, level from `log.level` or `RUST_LOG`; and the
//! `[log]` section that says which.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::config_checks::ConfigError;

/// Installs the global subscriber once; later calls (tests, demo) are no-ops.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour codes only for a person at a terminal, never into journald or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if cfg.json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// JSON lines (`log.format = "json"`) instead of text.
    pub json: bool,
    /// The level filter (tracing's EnvFilter syntax); RUST_LOG overrides it.
    pub level: String,
}

/// `[log]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// log.format: "text" for people, "json" for log shippers.
    #[serde(default = "default_format")]
    pub format: String,
    /// log.level: the level filter (tracing's EnvFilter syntax); RUST_LOG overrides it.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_format(),
            level: default_level(),
        }
    }
}

fn default_format() -> String {
    "text".into()
}

fn default_level() -> String {
    "info".into()
}

/// Checks `[log]`.
pub fn validate(raw: RawLog) -> Result<LogConfig, ConfigError> {
    let json = match raw.format.as_str() {
        "json" => true,
        "text" => false,
        other => {
            return Err(ConfigError::key(
                "log.format",
                format!("unknown format {other:?}; expected \"text\" or \"json\""),
            ))
        }
    };
    Ok(LogConfig {
        json,
        level: raw.level,
    })
}
