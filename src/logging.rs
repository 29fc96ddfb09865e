//! Log output: human-readable text or JSON lines, level from `log.level` or `RUST_LOG`; and the
//! `[log]` section that says which.

use std::fmt::{self, Write as _};

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config_checks::ConfigError;

mod request_span;

use request_span::WithRequestSpans;
pub(crate) use request_span::{in_current_request, RequestSpan};

/// Installs the global subscriber once; later calls (tests, demo) are no-ops.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour codes only for a person at a terminal, never into journald or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let installed = if cfg.json {
        WithRequestSpans::new(
            tracing_subscriber::registry()
                .with(filter)
                .with(SpanFields::Json)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(std::io::stderr)
                        .json()
                        .flatten_event(true),
                ),
        )
        .try_init()
    } else {
        WithRequestSpans::new(
            tracing_subscriber::registry()
                .with(filter)
                .with((!ansi).then_some(SpanFields::Text))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(std::io::stderr),
                ),
        )
        .try_init()
    };
    if installed.is_ok() {
        request_span::register();
    }
}

/// Renders a new span's fields as the log format does (text without colours, or JSON), into a
/// string sized once, before the formatter sees the span: it keeps fields it finds rendered
/// (tracing-subscriber's `fmt::Layer::on_new_span`). A request opens its span at its first log
/// line (every login, every refusal; [`request_span`]), and the formatter's own rendering was,
/// when every request opened one, the largest single item of the request path: in text each name
/// and `=` through a styled `Display` and the string grown four times, in JSON a `BTreeMap` of
/// `serde_json::Value`s, each field's text allocated twice. A span with a field the formatter
/// renders in its own way (text: `message` or an error; both: raw `r#` or `log.` names; JSON:
/// floats and byte strings) is left to it.
#[derive(Clone, Copy)]
enum SpanFields {
    /// As `DefaultFields` without colours: `name=value`, space-separated, values by `Debug`.
    Text,
    /// As `JsonFields`: one JSON object, keys in byte order, the last of a repeated name kept.
    Json,
}

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        match self {
            SpanFields::Text => {
                let mut fields = TextFields {
                    out: String::with_capacity(96),
                    leave: false,
                };
                attrs.record(&mut fields);
                if !fields.leave {
                    span.extensions_mut()
                        .insert(FormattedFields::<DefaultFields>::new(fields.out));
                }
            }
            SpanFields::Json => {
                let mut fields = JsonObject::default();
                attrs.record(&mut fields);
                if let Some(out) = fields.finish() {
                    span.extensions_mut()
                        .insert(FormattedFields::<JsonFields>::new(out));
                }
            }
        }
    }
}

/// Whether the formatters print a field name in a way of their own (raw identifiers lose their
/// `r#`, `log.` fields are the `log` crate's metadata): such spans are left to them.
fn formatter_special(name: &str) -> bool {
    name.starts_with("r#") || name.starts_with("log.")
}

/// `name=value` pairs, space-separated, values by `Debug`: `DefaultFields` without colours.
struct TextFields {
    out: String,
    /// A field `DefaultFields` renders differently: the formatter gets the span.
    leave: bool,
}

impl Visit for TextFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name == "message" || formatter_special(name) {
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

/// One JSON object as `JsonFields` writes it (serde_json's compact form): the members are
/// rendered as they come, then put in the order of their names.
#[derive(Default)]
struct JsonObject {
    /// Every member's `"name":value`, back to back.
    members: Vec<u8>,
    /// Each member's name and its bytes in `members`, in the order recorded.
    spans: Vec<(&'static str, std::ops::Range<usize>)>,
    /// A `Debug` value's text before it is escaped.
    scratch: String,
    /// A field `JsonFields` renders differently: the formatter gets the span.
    leave: bool,
}

impl JsonObject {
    /// Appends `name`'s member, its value written by `value`.
    fn member(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        if formatter_special(name) {
            self.leave = true;
            return;
        }
        if self.members.is_empty() {
            self.members.reserve(128);
        }
        let start = self.members.len();
        json_string(&mut self.members, name);
        self.members.push(b':');
        value(&mut self.members);
        self.spans.push((name, start..self.members.len()));
    }

    /// The object, or `None` when the formatter should render the span itself.
    fn finish(mut self) -> Option<String> {
        if self.leave {
            return None;
        }
        // Stable: of a repeated name the last recorded stays last, and is the one kept
        // (a `BTreeMap` insert replaces the earlier value).
        self.spans.sort_by_key(|(name, _)| *name);
        let mut out = Vec::with_capacity(self.members.len() + self.spans.len() + 2);
        out.push(b'{');
        for (i, (name, range)) in self.spans.iter().enumerate() {
            if self.spans.get(i + 1).is_some_and(|(next, _)| next == name) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&self.members[range.clone()]);
        }
        out.push(b'}');
        String::from_utf8(out).ok()
    }
}

impl Visit for JsonObject {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        let _ = write!(text, "{value:?}");
        self.member(field.name(), |out| json_string(out, &text));
        self.scratch = text;
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field.name(), |out| json_string(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field.name(), |out| {
            let _ = std::io::Write::write_fmt(out, format_args!("{value}"));
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name(), |out| {
            let _ = std::io::Write::write_fmt(out, format_args!("{value}"));
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name(), |out| {
            out.extend_from_slice(if value { b"true" } else { b"false" })
        });
    }

    fn record_f64(&mut self, _: &Field, _: f64) {
        self.leave = true;
    }

    fn record_bytes(&mut self, _: &Field, _: &[u8]) {
        self.leave = true;
    }
}

/// `s` as a JSON string, escaped by serde_json itself (what `JsonFields` writes).
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
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
pub(super) mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// What a formatter wrote (`MakeWriter` for tests).
    #[derive(Clone, Default)]
    pub(super) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        /// Everything written so far.
        pub(super) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

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

    /// What the log format prints for a few spans, with or without [`SpanFields`].
    fn output(format: SpanFields, prefilled: bool) -> String {
        let out = Captured::default();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(out.clone());
        let subscriber = tracing_subscriber::registry()
            .with(prefilled.then_some(format))
            .with(match format {
                SpanFields::Text => fmt.boxed(),
                SpanFields::Json => fmt.json().flatten_event(true).boxed(),
            });
        tracing::subscriber::with_default(subscriber, || {
            let peer: std::net::IpAddr = [10, 0, 0, 7].into();
            let request = tracing::info_span!(
                "request",
                request_id = %"0f3a",
                peer = %peer,
            );
            let _r = request.enter();
            let odd = tracing::info_span!(
                "odd",
                quoted = "a \"b\"\n\u{1}\\ é",
                n = 42u64,
                minus = -7i64,
                ok = true,
                later = tracing::field::Empty,
                b = ?Some("x"),
            );
            odd.record("later", "set");
            let _o = odd.enter();
            let inside = tracing::info_span!("no_fields");
            let _i = inside.enter();
            tracing::info!(user = "x", "inside");
            let with_error = tracing::info_span!(
                "with_error",
                error = &std::io::Error::other("boom") as &(dyn std::error::Error + 'static),
            );
            let _e = with_error.enter();
            let float = tracing::info_span!("float", x = 1.5f64, message = "m");
            let _f = float.enter();
            tracing::info!(user = "x", "deeper");
        });
        out.text()
    }

    #[test]
    fn prefilled_span_fields_print_as_the_formatter_prints_them() {
        let plain = output(SpanFields::Text, false);
        assert!(
            plain.contains("request{request_id=0f3a peer=10.0.0.7}"),
            "{plain}"
        );
        assert_eq!(output(SpanFields::Text, true), plain);
        let json = output(SpanFields::Json, false);
        assert!(
            json.contains(r#"{"peer":"10.0.0.7","request_id":"0f3a","name":"request"}"#),
            "{json}"
        );
        assert_eq!(output(SpanFields::Json, true), json);
    }

    #[test]
    fn json_members_are_sorted_and_the_last_of_a_name_kept() {
        let mut o = JsonObject::default();
        o.member("z", |out| out.push(b'1'));
        o.member("a", |out| json_string(out, "\u{1f}\u{7f}/"));
        o.member("z", |out| out.push(b'2'));
        assert_eq!(o.finish().unwrap(), "{\"a\":\"\\u001f\u{7f}/\",\"z\":2}");
        assert_eq!(JsonObject::default().finish().unwrap(), "{}");
    }
}
