use tracing_subscriber::layer::SubscriberExt;

use super::*;

fn record(level: Severity, unix_micros: i64, message: &str) -> LogRecord {
    LogRecord {
        timestamp: format_rfc3339_micros(unix_micros),
        unix_micros,
        level,
        target: "t".into(),
        message: message.into(),
        fields: Map::new(),
    }
}

#[test]
fn rfc3339_round_trips_and_knows_the_calendar() {
    assert_eq!(format_rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(
        format_rfc3339_micros(951_782_400_000_001),
        "2000-02-29T00:00:00.000001Z"
    );
    assert_eq!(format_rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
    for micros in [
        0,
        1,
        951_782_400_000_001,
        1_794_000_000_123_456,
        4_102_444_800_000_000,
        -86_400_000_000,
    ] {
        assert_eq!(parse_rfc3339_micros(&format_rfc3339_micros(micros)), Some(micros));
    }
    assert_eq!(
        parse_rfc3339_micros("2000-02-29T01:00:00+01:00"),
        Some(951_782_400_000_000)
    );
    assert_eq!(
        parse_rfc3339_micros("2000-02-28T23:30:00-00:30"),
        Some(951_782_400_000_000)
    );
    assert_eq!(
        parse_rfc3339_micros("2000-02-29t00:00:00.5z"),
        Some(951_782_400_500_000)
    );
    assert_eq!(
        parse_rfc3339_micros("2000-02-29T00:00:00.1234567Z"),
        Some(951_782_400_123_456)
    );
    for bad in [
        "",
        "2000-02-30T00:00:00Z",
        "2001-02-29T00:00:00Z",
        "2000-13-01T00:00:00Z",
        "2000-01-01T24:00:00Z",
        "2000-01-01T00:00:00",
        "2000-01-01T00:00:00.Z",
        "2000-01-01T00:00:00+1:00",
        "2000-01-01T00:00:00+01:0x",
        "2000-01-01T00:00:00ZZ",
        "yesterday",
        "2000-01-01T00:00:0xZ",
    ] {
        assert_eq!(parse_rfc3339_micros(bad), None, "{bad}");
    }
}

#[test]
fn query_parameters_are_strict() {
    let q = LogQuery::parse(Some("WARN"), Some("5"), Some("1500")).unwrap();
    assert_eq!(
        q,
        LogQuery {
            min_level: Severity::Warn,
            limit: 5,
            since_micros: Some(1_500_000)
        }
    );
    assert_eq!(LogQuery::parse(None, None, None).unwrap(), LogQuery::default());
    let q = LogQuery::parse(None, Some(&CAPACITY.to_string()), Some("1970-01-01T00:00:01Z")).unwrap();
    assert_eq!((q.limit, q.since_micros), (CAPACITY, Some(1_000_000)));
    for (level, limit, since, needle) in [
        (Some("loud"), None, None, "level"),
        (Some(""), None, None, "level"),
        (None, Some("0"), None, "limit"),
        (None, Some("-1"), None, "limit"),
        (None, Some(&*(CAPACITY + 1).to_string()), None, "limit"),
        (None, Some("ten"), None, "limit"),
        (None, None, Some("soon"), "since"),
        (None, None, Some(""), "since"),
        (None, None, Some("99999999999999999999"), "since"),
    ] {
        let err = LogQuery::parse(level, limit, since).unwrap_err();
        assert!(matches!(&err, Error::InvalidInput(m) if m.contains(needle)), "{err}");
    }
}

#[test]
fn the_ring_keeps_the_newest_and_filters() {
    let buffer = LogBuffer::new(4);
    for (i, level) in [
        Severity::Info,
        Severity::Debug,
        Severity::Warn,
        Severity::Error,
        Severity::Info,
        Severity::Trace,
    ]
    .into_iter()
    .enumerate()
    {
        buffer.push(record(level, i as i64 * 10, &format!("m{i}")));
    }
    assert_eq!(buffer.len(), 4);
    let messages = |q: LogQuery| buffer.query(&q).iter().map(|r| r.message.clone()).collect::<Vec<_>>();
    assert_eq!(messages(LogQuery::default()), ["m2", "m3", "m4", "m5"]);
    let at_least = |min_level| LogQuery {
        min_level,
        ..LogQuery::default()
    };
    assert_eq!(messages(at_least(Severity::Info)), ["m2", "m3", "m4"]);
    assert_eq!(messages(at_least(Severity::Error)), ["m3"]);
    assert_eq!(
        messages(LogQuery {
            limit: 2,
            ..LogQuery::default()
        }),
        ["m4", "m5"]
    );
    assert_eq!(
        messages(LogQuery {
            since_micros: Some(30),
            ..LogQuery::default()
        }),
        ["m3", "m4", "m5"]
    );
}

#[test]
fn the_layer_records_structured_events() {
    let buffer = Arc::new(LogBuffer::new(16));
    let subscriber = tracing_subscriber::registry().with(buffer.layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "cave::test", keys = 3u64, ok = true, name = "n", "opened {}", "db");
        tracing::warn!(long = %"x".repeat(MAX_FIELD_CHARS + 10), "");
    });
    let records = buffer.query(&LogQuery::default());
    assert_eq!(records.len(), 2);
    let first = &records[0];
    assert_eq!((first.level, first.target.as_str()), (Severity::Info, "cave::test"));
    assert_eq!(first.message, "opened db");
    assert_eq!(
        Value::Object(first.fields.clone()),
        serde_json::json!({"keys": 3, "ok": true, "name": "n"})
    );
    let json = serde_json::to_value(&**first).unwrap();
    assert_eq!(json["level"], "info");
    assert!(parse_rfc3339_micros(json["timestamp"].as_str().unwrap()).is_some());
    let long = records[1].fields["long"].as_str().unwrap();
    assert_eq!(long.chars().count(), MAX_FIELD_CHARS + 1);
    assert!(long.ends_with('…'));
}
