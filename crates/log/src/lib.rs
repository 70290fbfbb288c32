//! Logging for kiln's binaries. The libraries emit [`tracing`] events with structured
//! fields (`model`, `version`, `path`, ...) and never print; a binary calls [`init`] once
//! to choose where and how they are written:
//!
//! - [`LogFormat::Human`]: one line per event, the message alone (`warning: ` or
//!   `error: ` before it for those levels), as a person reads a terminal;
//! - [`LogFormat::Json`]: one JSON object per line with the time, level, target, message
//!   and every field, for log collectors.
//!
//! `RUST_LOG` filters as usual (`RUST_LOG=debug`, `RUST_LOG=kiln_serve::access=info`);
//! without it, `default_filter` applies.
//!
//! ```
//! kiln_log::init("kiln-example", "json".parse()?, "info")?;
//! tracing::info!(model = "fashion", version = 1, "serving fashion version 1");
//! # Ok::<(), kiln_log::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log events are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// The message, one line per event.
    #[default]
    Human,
    /// One JSON object per line, with every field.
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<LogFormat, Error> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(Error::Format(other.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// What can go wrong setting logging up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An unknown `--log-format`.
    #[error("log format {0:?} is unknown; expected human or json")]
    Format(String),
    /// A `RUST_LOG` (or default) filter that does not parse.
    #[error("log filter: {0}")]
    Filter(String),
    /// Logging was already set up in this process.
    #[error("logging is already set up: {0}")]
    AlreadySet(String),
}

/// Lines for people: `message`, or `PROGRAM: warning: message` / `PROGRAM: error: message`.
struct Human {
    program: &'static str,
}

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = *event.metadata().level();
        if level == Level::WARN {
            write!(w, "{}: warning: ", self.program)?;
        } else if level == Level::ERROR {
            write!(w, "{}: error: ", self.program)?;
        } else if level > Level::INFO {
            write!(w, "{}: {}: ", self.program, level.as_str().to_ascii_lowercase())?;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        writeln!(w, "{}", message.0)
    }
}

/// Collects an event's `message` field.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Sends this process's tracing events to stderr in `format`, filtered by `RUST_LOG` or
/// else `default_filter`. `program` starts human warning and error lines.
pub fn init(program: &'static str, format: LogFormat, default_filter: &str) -> Result<(), Error> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => EnvFilter::try_new(f),
        _ => EnvFilter::try_new(default_filter),
    }
    .map_err(|e| Error::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(false).event_format(Human { program }).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    }
    .map_err(|e| Error::AlreadySet(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print_back() {
        for f in [LogFormat::Human, LogFormat::Json] {
            assert_eq!(f.to_string().parse::<LogFormat>().unwrap(), f);
        }
        assert!("xml"
            .parse::<LogFormat>()
            .unwrap_err()
            .to_string()
            .contains("human or json"));
    }
}
