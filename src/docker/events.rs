//! Docker's container event stream: reading it line by line within a bounded buffer,
//! and its vocabulary (dockerd's and Podman's actions), turned into the source's
//! [`Change`] once, where an event is read.

use std::io::{BufRead, BufReader, Read};

use serde::Deserialize;

use super::error::{DockerError, Kind};
use crate::source::{Change, Event};

/// Longest event line kept: an event carries the container's labels; under 1 KiB as
/// recorded. A longer line is skipped (and logged), and the stream goes on.
pub const EVENT_LINE_LIMIT: usize = 64 * 1024;

/// A live `/events` stream.
pub struct Events {
    reader: BufReader<Box<dyn Read + Send>>,
    /// The line read so far (never more than [`EVENT_LINE_LIMIT`] bytes).
    line: Vec<u8>,
    /// The current line outgrew the limit: drop its bytes up to the next newline.
    skipping: bool,
    endpoint: String,
}

impl Events {
    pub(super) fn new(reader: Box<dyn Read + Send>, endpoint: String) -> Events {
        Events {
            reader: BufReader::new(reader),
            line: Vec::new(),
            skipping: false,
            endpoint,
        }
    }

    /// The next event that may change what is registered (others are skipped here);
    /// `Ok(None)` when nothing arrived within the idle timeout; an error when the stream
    /// ended (the daemon restarted) or broke. A line longer than
    /// [`EVENT_LINE_LIMIT`] is skipped with a warning; the stream stays usable.
    pub fn next_event(&mut self) -> Result<Option<Event>, DockerError> {
        let err = |kind| DockerError::new("events", &self.endpoint, kind);
        loop {
            match next_line(&mut self.reader, &mut self.line, &mut self.skipping) {
                Ok(Line::Eof) => {
                    return Err(err(Kind::Transport(ureq::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "event stream ended",
                    )))))
                }
                Ok(Line::TooLong) => log::warn!(
                    "docker events at {}: skipped an event line longer than {} KiB",
                    self.endpoint,
                    EVENT_LINE_LIMIT / 1024
                ),
                Ok(Line::Complete) => {
                    let line = std::mem::take(&mut self.line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let Some(raw) = parse_event(&line) else {
                        log::debug!("ignoring event line: {}", String::from_utf8_lossy(&line));
                        continue;
                    };
                    if let Some(change) = classify(&raw.action) {
                        let short = raw.id.get(..12).unwrap_or(&raw.id);
                        log::debug!("docker event {} {short}", raw.action);
                        return Ok(Some(Event { change, id: raw.id }));
                    }
                }
                Err(e) if is_idle_timeout(&e) => return Ok(None),
                Err(e) => return Err(err(Kind::Transport(ureq::Error::Io(e)))),
            }
        }
    }
}

/// What [`next_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `line` holds a whole line, newline included.
    Complete,
    /// A line outgrew [`EVENT_LINE_LIMIT`]: it is dropped (said once per line).
    TooLong,
    Eof,
}

/// Reads up to the next newline into `line`, holding at most [`EVENT_LINE_LIMIT`]
/// bytes. A partial line survives an error (the idle timeout) and is continued by the
/// next call; `skipping` carries "this line is being dropped" across calls likewise.
fn next_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    skipping: &mut bool,
) -> std::io::Result<Line> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (n, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let mut too_long = false;
        if !*skipping {
            if line.len() + n > EVENT_LINE_LIMIT {
                line.clear();
                *skipping = true;
                too_long = true;
            } else {
                line.extend_from_slice(&buf[..n]);
            }
        }
        reader.consume(n);
        if done {
            let was_skipping = std::mem::replace(skipping, false);
            if !was_skipping {
                return Ok(Line::Complete);
            }
        }
        if too_long {
            return Ok(Line::TooLong);
        }
    }
}

fn is_idle_timeout(e: &std::io::Error) -> bool {
    // ureq reports its per-read timeout as an io::Error wrapping ureq::Error::Timeout.
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// An action in dockerd's words: Podman says `remove` where dockerd says `destroy`.
fn normalize_action(action: &str) -> &str {
    match action {
        "remove" => "destroy",
        other => other,
    }
}

/// What an action (normalized or not) means for the registrator, the same for dockerd
/// and Podman; None for those that change nothing registered (`create`, `kill`, and
/// Podman's `init`, `cleanup`, `exec`, `exec_died`, ...).
///
/// Podman sometimes sends only `die` for a stop, so any one of the down actions counts.
/// dockerd names the new health state (`health_status: healthy`); Podman sends a bare
/// `health_status` whose `HealthStatus` field lags one check behind, so only inspect is
/// to be trusted.
fn classify(action: &str) -> Option<Change> {
    match normalize_action(action) {
        "start" | "unpause" | "restart" => Some(Change::Up),
        "die" | "stop" | "destroy" | "pause" => Some(Change::Down),
        a if a == "health_status" || a.starts_with("health_status:") => Some(Change::Health),
        _ => None,
    }
}

/// One line of `/events` as dockerd or Podman wrote it.
#[derive(Debug, PartialEq, Eq)]
struct Raw {
    action: String,
    id: String,
}

/// Parses one line of `/events`. Reads `Action` (Docker 29 no longer sends `status`)
/// and returns it in dockerd's words ([`normalize_action`]).
fn parse_event(line: &[u8]) -> Option<Raw> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Type", default)]
        kind: String,
        #[serde(rename = "Action", default)]
        action: String,
        #[serde(default)]
        status: String,
        #[serde(rename = "Actor", default)]
        actor: Option<Actor>,
        #[serde(default)]
        id: String,
    }
    #[derive(Deserialize)]
    struct Actor {
        #[serde(rename = "ID", default)]
        id: String,
    }
    let w: Wire = serde_json::from_slice(line).ok()?;
    if !w.kind.is_empty() && w.kind != "container" {
        return None;
    }
    let action = if w.action.is_empty() {
        w.status
    } else {
        w.action
    };
    let id = w
        .actor
        .map(|a| a.id)
        .filter(|s| !s.is_empty())
        .unwrap_or(w.id);
    if action.is_empty() || id.is_empty() {
        return None;
    }
    Some(Raw {
        action: normalize_action(&action).to_string(),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fixture;

    #[test]
    fn events_read_action_not_status() {
        let docker29 = br#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"x"}},"scope":"local","time":1,"timeNano":1}"#;
        assert_eq!(
            parse_event(docker29),
            Some(Raw {
                action: "start".into(),
                id: "abc".into()
            })
        );
        let old = br#"{"status":"die","id":"abc","from":"img","Type":"container","Action":"die","Actor":{"ID":"abc"}}"#;
        assert_eq!(parse_event(old).unwrap().action, "die");
        let health =
            br#"{"Type":"container","Action":"health_status: healthy","Actor":{"ID":"abc"}}"#;
        assert_eq!(
            parse_event(health).unwrap().action,
            "health_status: healthy"
        );
        assert_eq!(
            parse_event(br#"{"Type":"network","Action":"connect","Actor":{"ID":"n"}}"#),
            None
        );
        assert_eq!(parse_event(b"garbage"), None);
    }

    #[test]
    fn event_actions_in_one_vocabulary() {
        for (action, normalized, kind) in [
            ("start", "start", Some(Change::Up)),
            ("unpause", "unpause", Some(Change::Up)),
            ("restart", "restart", Some(Change::Up)),
            ("die", "die", Some(Change::Down)),
            ("stop", "stop", Some(Change::Down)),
            ("pause", "pause", Some(Change::Down)),
            ("destroy", "destroy", Some(Change::Down)),
            ("remove", "destroy", Some(Change::Down)),
            ("health_status", "health_status", Some(Change::Health)),
            (
                "health_status: healthy",
                "health_status: healthy",
                Some(Change::Health),
            ),
            (
                "health_status: unhealthy",
                "health_status: unhealthy",
                Some(Change::Health),
            ),
            ("health_statusx", "health_statusx", None),
            ("create", "create", None),
            ("kill", "kill", None),
            ("init", "init", None),
            ("cleanup", "cleanup", None),
            ("exec", "exec", None),
            ("exec_died", "exec_died", None),
            ("exec_start: sh", "exec_start: sh", None),
        ] {
            assert_eq!(normalize_action(action), normalized, "{action}");
            assert_eq!(classify(action), kind, "{action}");
        }
    }

    #[test]
    fn podman_events_recorded() {
        let text = fixture("podman/events.jsonl");
        let events: Vec<Raw> = text
            .lines()
            .map(|l| parse_event(l.as_bytes()).unwrap())
            .collect();
        assert!(events.iter().all(|e| e.id.starts_with("0d5f66530ab5")));
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        // run, two health checks (one exec between), pause, unpause, restart, stop,
        // start, kill, rm -f.
        assert_eq!(
            actions,
            [
                "create",
                "init",
                "start",
                "health_status",
                "exec_died",
                "exec",
                "exec_died",
                "health_status",
                "exec_died",
                "pause",
                "unpause",
                "restart",
                "stop",
                "die",
                "init",
                "start",
                "die",
                "cleanup",
                "init",
                "start",
                "kill",
                "die",
                "destroy",
            ]
        );
        let kinds: Vec<Option<Change>> = actions.iter().map(|a| classify(a)).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == Some(Change::Health)).count(),
            2
        );
        assert_eq!(kinds.last(), Some(&Some(Change::Down)));
    }

    /// A reader that plays a script: chunks of bytes, and errors between them.
    struct Script(std::collections::VecDeque<std::io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(out.len());
                    out[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.0.push_front(Ok(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    #[test]
    fn the_stream_yields_changes_and_skips_the_rest() {
        let text = [
            r#"{"Type":"container","Action":"create","Actor":{"ID":"a"}}"#,
            r#"{"Type":"container","Action":"start","Actor":{"ID":"a"}}"#,
            r#"{"Type":"container","Action":"exec_died","Actor":{"ID":"a"}}"#,
            "garbage",
            "",
            r#"{"Type":"container","Action":"health_status","Actor":{"ID":"a"}}"#,
            r#"{"Type":"container","Action":"remove","Actor":{"ID":"a"}}"#,
        ]
        .join("\n");
        let idle = Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let script = Script(vec![Ok(text.into_bytes()), Ok(b"\n".to_vec()), idle].into());
        let mut events = Events::new(Box::new(script), "test".into());
        let a = |change| {
            Some(Event {
                change,
                id: "a".into(),
            })
        };
        assert_eq!(events.next_event().unwrap(), a(Change::Up));
        assert_eq!(events.next_event().unwrap(), a(Change::Health));
        assert_eq!(events.next_event().unwrap(), a(Change::Down));
        assert_eq!(events.next_event().unwrap(), None, "idle, not ended");
        let e = events.next_event().unwrap_err().to_string();
        assert!(e.contains("event stream ended"), "{e}");
    }

    #[test]
    fn event_lines_are_bounded_and_survive_timeouts() {
        use std::io::ErrorKind::{Interrupted, TimedOut};
        let fail = |kind| Err(std::io::Error::from(kind));
        let long = vec![b'x'; EVENT_LINE_LIMIT * 3];
        let mut exact = vec![b'y'; EVENT_LINE_LIMIT - 1];
        exact.push(b'\n');
        let script = Script(
            vec![
                Ok(b"{\"a\":".to_vec()),
                fail(TimedOut),
                Ok(b"1}\n{\"b\"".to_vec()),
                Ok(b":2}\n".to_vec()),
                Ok(long.clone()),
                fail(TimedOut),
                Ok(long.clone()),
                Ok(b"\nnext\n".to_vec()),
                Ok(long),
                Ok(b"\n".to_vec()),
                Ok(exact.clone()),
                fail(Interrupted),
                Ok(b"last".to_vec()),
            ]
            .into(),
        );
        let mut reader = BufReader::with_capacity(4096, script);
        let (mut line, mut skipping) = (Vec::new(), false);
        let mut got = Vec::new();
        loop {
            match next_line(&mut reader, &mut line, &mut skipping) {
                Ok(Line::Complete) => {
                    assert!(line.len() <= EVENT_LINE_LIMIT);
                    got.push(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned());
                }
                Ok(Line::TooLong) => got.push("<too long>".into()),
                Ok(Line::Eof) => break,
                Err(e) => got.push(format!("<{:?}>", e.kind())),
            }
            assert!(
                line.capacity() <= 2 * EVENT_LINE_LIMIT,
                "{}",
                line.capacity()
            );
        }
        let exact = String::from_utf8(exact).unwrap();
        assert_eq!(
            got,
            [
                "<TimedOut>",
                "{\"a\":1}\n",
                "{\"b\":2}\n",
                "<too long>",
                "<TimedOut>",
                "next\n",
                "<too long>",
                &exact,
            ]
        );
        // The unterminated tail stays in `line`: an ended stream reports Eof.
        assert_eq!(line, b"last");
    }
}
