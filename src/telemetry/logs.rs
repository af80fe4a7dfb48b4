//! A bounded in-memory ring buffer of recent structured log records, fed by a `tracing` layer and served
//! by `GET /api/v1/perf/logs`.
//!
//! # Why in memory, why bounded
//! Operators of a small cluster often have HTTP access to a node but not its journal. Keeping the last
//! [`CAPACITY`] records in memory answers "what just happened" at a fixed cost: the oldest record is dropped
//! when a new one arrives, and every string field is cut at [`MAX_FIELD_CHARS`], so a chatty or huge log
//! line can neither grow memory nor stall the writer. Records are what the process's subscriber lets
//! through (its `log_level` filter applies before this layer), so the buffer shows what the log file shows.
//!
//! # Why process-wide
//! A `tracing` subscriber is per process, so logs are too: [`global`] is the one buffer `main` installs
//! [`layer`] for and the endpoint reads. (Several nodes in one test process share it, as they share stderr.)
//!
//! # What never gets in
//! The layer records only what code logs; Cave never logs values, secrets or key material (see
//! `docs/architecture.md`), and a test writes a secret and a plain value through the API and checks that
//! neither appears here.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::error::{Error, Result};

/// Records the process keeps.
pub const CAPACITY: usize = 2048;
/// Records `?limit=` returns unless told otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// Longest string kept per field (message included), in characters; longer ones are cut and marked `…`.
pub const MAX_FIELD_CHARS: usize = 2048;

/// Log severity, least severe first (so `>=` means "at least as severe").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Trace => "trace",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }

    fn of(level: &Level) -> Severity {
        match *level {
            Level::TRACE => Severity::Trace,
            Level::DEBUG => Severity::Debug,
            Level::INFO => Severity::Info,
            Level::WARN => Severity::Warn,
            _ => Severity::Error,
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = Error;

    fn from_str(text: &str) -> Result<Severity> {
        match text.to_ascii_lowercase().as_str() {
            "trace" => Ok(Severity::Trace),
            "debug" => Ok(Severity::Debug),
            "info" => Ok(Severity::Info),
            "warn" | "warning" => Ok(Severity::Warn),
            "error" => Ok(Severity::Error),
            _ => Err(Error::invalid(
                "parameter level must be one of trace, debug, info, warn, error",
            )),
        }
    }
}

/// One log event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    /// When it was logged, RFC 3339 in UTC with microseconds (`2026-11-03T09:15:02.123456Z`).
    pub timestamp: String,
    /// The same instant in microseconds since the Unix epoch (for filtering).
    #[serde(skip)]
    pub unix_micros: i64,
    /// Severity.
    pub level: Severity,
    /// The `tracing` target (module path unless the call site set one).
    pub target: String,
    /// The event's message (empty if it had none).
    pub message: String,
    /// Every other field of the event.
    pub fields: Map<String, Value>,
}

/// Which records a query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// Only records at least this severe.
    pub min_level: Severity,
    /// At most this many (the newest ones).
    pub limit: usize,
    /// Only records logged at or after this instant (microseconds since the epoch).
    pub since_micros: Option<i64>,
}

impl Default for LogQuery {
    fn default() -> Self {
        LogQuery {
            min_level: Severity::Trace,
            limit: DEFAULT_LIMIT,
            since_micros: None,
        }
    }
}

impl LogQuery {
    /// Parse the `?level=`, `?limit=` and `?since=` parameters; a bad one is an [`Error::InvalidInput`]
    /// naming it. `since` is an RFC 3339 timestamp or Unix milliseconds.
    pub fn parse(level: Option<&str>, limit: Option<&str>, since: Option<&str>) -> Result<LogQuery> {
        let mut query = LogQuery::default();
        if let Some(level) = level {
            query.min_level = level.parse()?;
        }
        if let Some(limit) = limit {
            query.limit = limit
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=CAPACITY).contains(n))
                .ok_or_else(|| Error::invalid(format!("parameter limit must be an integer from 1 to {CAPACITY}")))?;
        }
        if let Some(since) = since {
            query.since_micros =
                Some(parse_since(since).ok_or_else(|| {
                    Error::invalid("parameter since must be an RFC 3339 timestamp or Unix milliseconds")
                })?);
        }
        Ok(query)
    }
}

/// The ring buffer.
pub struct LogBuffer {
    capacity: usize,
    records: Mutex<VecDeque<Arc<LogRecord>>>,
}

impl fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogBuffer")
            .field("capacity", &self.capacity)
            .field("len", &self.records.lock().len())
            .finish()
    }
}

impl LogBuffer {
    /// An empty buffer keeping at most `capacity` records (at least one).
    pub fn new(capacity: usize) -> LogBuffer {
        let capacity = capacity.max(1);
        LogBuffer {
            capacity,
            records: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Keep `record`, dropping the oldest if full.
    pub fn push(&self, record: LogRecord) {
        let record = Arc::new(record);
        let mut records = self.records.lock();
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The newest `query.limit` records that match, oldest first (newest last).
    pub fn query(&self, query: &LogQuery) -> Vec<Arc<LogRecord>> {
        let records = self.records.lock();
        let mut out: Vec<Arc<LogRecord>> = records
            .iter()
            .rev()
            // Records are in logging order, so once one is older than `since` all earlier ones are too.
            .take_while(|r| query.since_micros.is_none_or(|since| r.unix_micros >= since))
            .filter(|r| r.level >= query.min_level)
            .take(query.limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.records.lock().len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A `tracing` layer feeding this buffer.
    pub fn layer(self: &Arc<Self>) -> LogLayer {
        LogLayer { buffer: self.clone() }
    }
}

/// The process's buffer, the one `/api/v1/perf/logs` serves.
pub fn global() -> &'static Arc<LogBuffer> {
    static GLOBAL: OnceLock<Arc<LogBuffer>> = OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(LogBuffer::new(CAPACITY)))
}

/// A layer feeding [`global`]: add it to the process's subscriber next to the formatting layer.
pub fn layer() -> LogLayer {
    global().layer()
}

/// A `tracing_subscriber` layer that copies every event it sees into a [`LogBuffer`].
#[derive(Debug, Clone)]
pub struct LogLayer {
    buffer: Arc<LogBuffer>,
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let unix_micros = now_micros();
        // Everything is built before the buffer's lock is taken: the lock covers a pointer push only.
        self.buffer.push(LogRecord {
            timestamp: format_rfc3339_micros(unix_micros),
            unix_micros,
            level: Severity::of(metadata.level()),
            target: metadata.target().to_string(),
            message: visitor.message,
            fields: visitor.fields,
        });
    }
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: Map<String, Value>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        self.fields.insert(field.name().to_string(), value);
    }

    fn put_text(&mut self, field: &Field, text: String) {
        let text = truncate(text);
        if field.name() == "message" {
            self.message = text;
        } else {
            self.put(field, Value::String(text));
        }
    }
}

impl Visit for FieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(
            field,
            serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        );
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_text(field, value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put_text(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_text(field, format!("{value:?}"));
    }
}

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_FIELD_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// `?since=`: all digits are Unix milliseconds, anything else must be RFC 3339.
fn parse_since(text: &str) -> Option<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().ok()?.checked_mul(1000);
    }
    parse_rfc3339_micros(text)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_rfc3339_micros(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Parse an RFC 3339 timestamp (`2026-11-03T09:15:02Z`, optional fraction, `Z` or `±HH:MM` offset) into
/// microseconds since the epoch. Fractions beyond microseconds are cut, not rounded.
pub fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    // 60 is a leap second; it is read as the following second's start.
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut micros: i64 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in fraction.bytes().take(digits).enumerate() {
            if i < 6 {
                micros = micros * 10 + i64::from(d - b'0');
            }
        }
        for _ in digits..6 {
            micros *= 10;
        }
        rest = &fraction[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let o = rest.as_bytes();
            if o.len() != 6 || o[3] != b':' || !matches!(o[0], b'+' | b'-') {
                return None;
            }
            let (h, m): (i64, i64) = (rest[1..3].parse().ok()?, rest[4..6].parse().ok()?);
            if h > 23 || m > 59 || !rest[1..3].bytes().chain(rest[4..6].bytes()).all(|c| c.is_ascii_digit()) {
                return None;
            }
            let sign = if o[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second) - offset_secs;
    Some(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests;
