//! Logs in go-hclog's JSON form on stderr, so Terraform files them under `TF_LOG_PROVIDER`
//! with the right level instead of treating every line as plain output.

use std::fmt;

use serde_json::{Map, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the stderr logger unless Terraform asked for a log file (`PLUGIN_LOG_FILE`), in
/// which case tf-provider installs its own.
pub fn init() {
    if std::env::var_os("PLUGIN_LOG_FILE").is_some() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASTLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("castle=trace,info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(HclogJson)
        .try_init();
}

/// hclog's JSON time layout, microseconds exactly: go-plugin (which reads our stderr for
/// Terraform) parses `@timestamp` with Go's `2006-01-02T15:04:05.000000Z07:00` and, when that
/// fails, files the whole line as raw DEBUG text instead of at its level.
const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// One JSON object per event with hclog's `@level`, `@message`, `@module`, `@timestamp`.
struct HclogJson;

impl<S, N> FormatEvent<S, N> for HclogJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonFields(Map::new());
        event.record(&mut fields);
        let mut line = fields.0;
        let message = line
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("@message".into(), message);
        line.insert(
            "@level".into(),
            Value::String(level_name(meta.level()).into()),
        );
        line.insert(
            "@module".into(),
            Value::String(format!("castle.{}", meta.target())),
        );
        let now = OffsetDateTime::now_utc()
            .format(TIMESTAMP)
            .unwrap_or_default();
        line.insert("@timestamp".into(), Value::String(now));
        writeln!(writer, "{}", Value::Object(line))
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_the_microsecond_layout_go_plugin_parses() {
        let at = time::macros::datetime!(2026-12-01 12:30:05.123456789 UTC);
        assert_eq!(at.format(TIMESTAMP).unwrap(), "2026-12-01T12:30:05.123456Z");
    }
}
