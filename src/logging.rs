//! The log's two line formats over env_logger and `RUST_LOG`: text with an RFC 3339 UTC
//! timestamp (the default), or one JSON object per line (`--log-format json`) with the
//! fields a log call names (`container`, `service`) and the key prefix.

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{Error, Key, Value, VisitSource};

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `[2026-12-06T15:42:21.123Z INFO  target] message`
    #[default]
    Text,
    /// `{"time":..,"level":..,"target":..,"message":..,<fields>}`
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<LogFormat, ()> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// Installs the logger: `RUST_LOG` chooses the levels (`default_level` when unset);
/// `prefix`, the registry's key prefix, goes on every JSON line.
pub fn init(format: LogFormat, default_level: &str, prefix: Option<String>) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format(move |buf, record| {
            let line = render(format, SystemTime::now(), record, prefix.as_deref());
            writeln!(buf, "{line}")
        })
        .init();
}

/// One record as one line (no newline). A JSON line has `time`, `level`, `target` and
/// `message`, then the record's non-empty fields, then `prefix` if given.
pub fn render(
    format: LogFormat,
    now: SystemTime,
    record: &log::Record,
    prefix: Option<&str>,
) -> String {
    let time = rfc3339(now);
    match format {
        LogFormat::Text => format!(
            "[{time} {:<5} {}] {}",
            record.level(),
            record.target(),
            record.args()
        ),
        LogFormat::Json => {
            let mut line = format!(
                "{{\"time\":\"{time}\",\"level\":\"{}\",\"target\":{},\"message\":{}",
                record.level(),
                json(record.target()),
                json(&record.args().to_string())
            );
            let mut fields = Fields(Vec::new());
            // Our visitor never fails.
            let _ = record.key_values().visit(&mut fields);
            let prefix = prefix.map(|p| ("prefix".to_string(), p.to_string()));
            for (k, v) in fields.0.into_iter().chain(prefix) {
                if !v.is_empty() {
                    line.push_str(&format!(",{}:{}", json(&k), json(&v)));
                }
            }
            line.push('}');
            line
        }
    }
}

/// A JSON string literal.
fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A record's key-value pairs, as text.
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        self.0.push((key.as_str().to_string(), value.to_string()));
        Ok(())
    }
}

/// `t` in UTC as RFC 3339 with milliseconds: `2026-12-06T15:42:21.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A clock before 1970 shows as the epoch.
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            s / 3600,
            s % 3600 / 60,
            s % 60,
            since.subsec_millis()
        )
    }
}

/// Year, month, day of the `days`th day after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn timestamps() {
        let cases = [
            (at(0, 0), "1970-01-01T00:00:00.000Z"),
            (at(951_782_400, 1), "2000-02-29T00:00:00.001Z"),
            (at(951_868_799, 999), "2000-02-29T23:59:59.999Z"),
            (at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z"),
            (at(1_709_164_800, 0), "2024-02-29T00:00:00.000Z"),
            (at(1_735_689_599, 500), "2024-12-31T23:59:59.500Z"),
            (at(1_796_571_741, 123), "2026-12-06T15:42:21.123Z"),
            (at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z"),
            (
                UNIX_EPOCH - Duration::from_secs(5),
                "1970-01-01T00:00:00.000Z",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(rfc3339(t), want);
        }
    }

    /// Every day from 1970 to 2400 follows the one before it.
    #[test]
    fn days_follow_each_other() {
        let mut prev = civil_from_days(0);
        for day in 1..157_000 {
            let (y, m, d) = civil_from_days(day);
            let next_day = (y, m, d) == (prev.0, prev.1, prev.2 + 1);
            let next_month = d == 1 && (y, m) == (prev.0, prev.1 + 1);
            let next_year = (m, d) == (1, 1) && y == prev.0 + 1 && prev.1 == 12;
            assert!(
                next_day || next_month || next_year,
                "{prev:?} -> {y}-{m}-{d}"
            );
            prev = (y, m, d);
        }
        assert_eq!(prev.0, 2399);
    }

    fn line(format: LogFormat, kvs: &[(&str, &str)], prefix: Option<&str>) -> String {
        render(
            format,
            at(1_796_571_741, 123),
            &log::Record::builder()
                .args(format_args!("register \"a\"\nb"))
                .level(log::Level::Warn)
                .target("etcd_registrator::x")
                .key_values(&kvs)
                .build(),
            prefix,
        )
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            line(LogFormat::Text, &[("container", "c")], Some("/s")),
            "[2026-12-06T15:42:21.123Z WARN  etcd_registrator::x] register \"a\"\nb"
        );
    }

    #[test]
    fn json_lines() {
        type Kvs<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Kvs, Option<&str>, &str); 3] = [
            (&[], None, ""),
            (
                &[("container", "web-1"), ("service", "web/h:web-1:80")],
                Some("/services"),
                r#","container":"web-1","service":"web/h:web-1:80","prefix":"/services""#,
            ),
            // Empty fields are left out.
            (&[("container", "")], Some("/s"), r#","prefix":"/s""#),
        ];
        for (kvs, prefix, tail) in cases {
            let got = line(LogFormat::Json, kvs, prefix);
            let want = format!(
                r#"{{"time":"2026-12-06T15:42:21.123Z","level":"WARN","target":"etcd_registrator::x","message":"register \"a\"\nb"{tail}}}"#
            );
            assert_eq!(got, want);
            assert!(!got.contains('\n'));
            serde_json::from_str::<serde_json::Value>(&got).unwrap();
        }
    }

    #[test]
    fn formats_by_name() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("JSON".parse::<LogFormat>(), Err(()));
    }
}
