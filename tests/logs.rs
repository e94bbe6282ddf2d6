//! The log's formats, from the real binary against the real etcd and dockerd: RFC 3339
//! UTC timestamps by default, and `--log-format json` (one object per line, with the
//! container, the service and the key prefix where a line is about them).

mod common;

use std::time::SystemTime;

use common::*;
use etcd_registrator::logging::rfc3339;
use serde_json::Value;

/// `2026-12-06T15:42:21.123Z`: the shape, digit by digit.
fn is_rfc3339_utc(s: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == shape.len()
        && s.chars().zip(shape.chars()).all(|(c, want)| match want {
            'd' => c.is_ascii_digit(),
            _ => c == want,
        })
}

#[test]
fn text_lines_start_with_an_rfc3339_utc_timestamp() {
    let p = prefix("logtext");
    let host = unique("node");
    let c = Container::httpd(&unique("logtext"), 80, &["SERVICE_NAME=web"]);
    let before = rfc3339(SystemTime::now());
    let out = once(&["--hostname", &host, &uri(&p)]);
    let after = rfc3339(SystemTime::now());
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("register web/{host}:{}:80", c.name)),
        "{err}"
    );
    for line in err.lines() {
        // `[2026-12-06T15:42:21.123Z INFO  etcd_registrator::...] ...`
        let time = line.get(1..25).unwrap_or_default();
        assert!(
            line.starts_with('[') && is_rfc3339_utc(time),
            "no timestamp: {line}"
        );
        // The same format compares as text: written during the run, in UTC.
        assert!(
            before.as_str() <= time && time <= after.as_str(),
            "{time} not in [{before}, {after}]: {line}"
        );
    }
}

#[test]
fn json_format_writes_one_object_per_line_with_the_fields_that_matter() {
    let p = prefix("logjson");
    let host = unique("node");
    let good = Container::httpd(&unique("logjson-good"), 80, &["SERVICE_NAME=web"]);
    let bad = Container::httpd(&unique("logjson-bad"), 80, &["SERVICE_MODE=ftp"]);
    // debug: the lines of every module (ureq's too) go through the format.
    let out = registrator(&[
        "--once",
        "--log-format",
        "json",
        "--hostname",
        &host,
        &uri(&p),
    ])
    .env("RUST_LOG", "debug")
    .output()
    .expect("run registrator");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{err}");
    for l in &lines {
        let text = |k: &str| l[k].as_str().unwrap_or_else(|| panic!("no {k}: {l}"));
        assert!(is_rfc3339_utc(text("time")), "{l}");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&text("level")),
            "{l}"
        );
        assert!(
            !text("target").is_empty() && !text("message").is_empty(),
            "{l}"
        );
        assert_eq!(text("prefix"), p, "{l}");
    }
    let about = |name: &str| {
        lines
            .iter()
            .find(|l| l["container"] == name)
            .unwrap_or_else(|| panic!("no line with container {name}:\n{err}"))
    };
    let registered = about(&good.name);
    assert_eq!(registered["level"], "INFO");
    assert_eq!(
        registered["service"],
        format!("web/{host}:{}:80", good.name),
        "{registered}"
    );
    assert!(
        registered["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("register web/")),
        "{registered}"
    );
    let refused = about(&bad.name);
    assert_eq!(refused["level"], "ERROR");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("SERVICE_MODE=\"ftp\" is not http or tcp")),
        "{refused}"
    );
}
