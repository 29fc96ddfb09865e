//! Log output: human-readable text or JSON lines, level from `log.level` or `RUST_LOG`; and the
//! `[log]` section that says which.

use std::fmt::{self, Write as _};

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config_checks::ConfigError;

/// Installs the global subscriber once; later calls (tests, demo) are no-ops.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour codes only for a person at a terminal, never into journald or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    if cfg.json {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .try_init();
    } else {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with((!ansi).then_some(PlainSpanFields))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init();
    }
}

/// Renders a new span's fields as the text formatter does without colours, into a string sized
/// once, before the formatter sees the span: it keeps fields it finds rendered
/// (tracing-subscriber's `fmt::Layer::on_new_span`). Every proxied request opens a span, and the
/// formatter's own rendering (each name and `=` through a styled `Display`, the string grown four
/// times) was the largest single item of the request path. A span with a field the formatter
/// renders in its own way (`message`, an error, a raw or `log.` name) is left to it.
struct PlainSpanFields;

impl<S> Layer<S> for PlainSpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = PlainFields {
            out: String::with_capacity(96),
            leave: false,
        };
        attrs.record(&mut fields);
        if !fields.leave {
            span.extensions_mut()
                .insert(FormattedFields::<DefaultFields>::new(fields.out));
        }
    }
}

/// `name=value` pairs, space-separated, values by `Debug`: `DefaultFields` without colours.
struct PlainFields {
    out: String,
    /// A field `DefaultFields` renders differently: the formatter gets the span.
    leave: bool,
}

impl Visit for PlainFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name == "message" || name.starts_with("r#") || name.starts_with("log.") {
            self.leave = true;
            return;
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        self.out.push_str(name);
        self.out.push('=');
        let _ = write!(self.out, "{value:?}");
    }

    fn record_error(&mut self, _: &Field, _: &(dyn std::error::Error + 'static)) {
        self.leave = true;
    }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// What the text format prints for a few spans, with or without [`PlainSpanFields`].
    fn text(prefilled: bool) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(prefilled.then_some(PlainSpanFields))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .with_writer(out.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let peer: std::net::IpAddr = [10, 0, 0, 7].into();
            let request = tracing::info_span!(
                "request",
                request_id = %"0f3a",
                peer = %crate::headers::PeerIp(peer),
            );
            let _r = request.enter();
            let odd = tracing::info_span!(
                "odd",
                quoted = "a \"b\"\n",
                n = 42u64,
                ok = true,
                later = tracing::field::Empty,
            );
            odd.record("later", "set");
            let _o = odd.enter();
            let with_error = tracing::info_span!(
                "with_error",
                error = &std::io::Error::other("boom") as &(dyn std::error::Error + 'static),
            );
            let _e = with_error.enter();
            tracing::info!(user = "x", "inside");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn prefilled_span_fields_print_as_the_formatter_prints_them() {
        let plain = text(false);
        assert!(
            plain.contains("request{request_id=0f3a peer=10.0.0.7}"),
            "{plain}"
        );
        assert_eq!(text(true), plain);
    }
}
