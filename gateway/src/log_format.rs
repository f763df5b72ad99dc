//! The log's line format for `serve`, `router` and `watch`: the layout of
//! tracing-subscriber's default (`TIME LEVEL SPAN{FIELDS}: TARGET: MESSAGE
//! NAME=VALUE...`, no colours), written field by field straight into the
//! line. The router logs a line per request; the default formatter's
//! general machinery (a `fmt::Arguments` per field, the time formatted
//! whole per line, styles even when they are off) cost about 2 µs of CPU
//! per request (`docs/benchmarks.md`).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The format, for `tracing_subscriber::fmt().event_format(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write_now(&mut writer)?;
        let meta = event.metadata();
        write!(writer, " {:>5} ", meta.level().as_str())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>().filter(|fields| !fields.is_empty()) {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields { writer: &mut writer, first: true, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes an event's fields: the message as it is, the others `name=value`.
struct Fields<'w, 'a> {
    writer: &'w mut Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }
}

impl Visit for Fields<'_, '_> {
    /// A string as the default format writes it: quoted, but the message.
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| match field.name() {
                "message" => self.writer.write_str(value),
                _ => write!(self.writer, "{value:?}"),
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() {
            let mut digits = itoa::Buffer::new();
            self.result = self.name(field).and_then(|()| self.writer.write_str(digits.format(value)));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_ok() {
            let mut digits = itoa::Buffer::new();
            self.result = self.name(field).and_then(|()| self.writer.write_str(digits.format(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| write!(self.writer, "{value:?}"));
        }
    }
}

thread_local! {
    /// The second last written on this thread, and its text up to the dot.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The time now, as RFC 3339 in UTC with microseconds: the date and the
/// second are formatted once a second per thread.
fn write_now(writer: &mut Writer<'_>) -> fmt::Result {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (second, micros) = (since.as_secs(), since.subsec_micros());
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let at = OffsetDateTime::from_unix_timestamp(i64::try_from(second).unwrap_or_default())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            text.clear();
            let (date, time) = (at.date(), at.time());
            write!(
                text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                date.year(),
                u8::from(date.month()),
                date.day(),
                time.hour(),
                time.minute(),
                time.second()
            )?;
            *cached = second;
        }
        writer.write_str(text)
    })?;
    write!(writer, "{micros:06}Z")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing::{info, info_span};

    use super::LineFormat;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_keep_the_default_layout() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(LineFormat)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let _push = info_span!("push", app = "shop").entered();
            info!(target: "nap::access", app = %"shop", status = 200_u16, ms = 3_u64, key = "a b", "request");
        });
        let text = String::from_utf8(lines.0.lock().expect("not poisoned").clone()).expect("utf-8");
        let (time, rest) = text.split_once(' ').expect("a time");
        assert!(time.len() == 27 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
        assert_eq!(rest, " INFO push{app=\"shop\"}: nap::access: request app=shop status=200 ms=3 key=\"a b\"\n");
    }
}
