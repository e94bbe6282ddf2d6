//! The opt-in operator listener (`--metrics-addr`): `GET /metrics` and `GET /healthz`
//! over plain HTTP/1.1, with std only, on threads of its own.
//!
//! It only reads atomics (see `metrics.rs`), so a scrape never holds up the loop, and
//! it defends itself: at most [`MAX_CONNECTIONS`] requests at once (more get 503 and
//! are closed), a request head of at most [`MAX_REQUEST`] bytes, a deadline to send
//! it, and every connection closed after one answer.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Requests handled at the same time; a scraper and a health probe need two.
pub const MAX_CONNECTIONS: usize = 4;
/// The largest request line plus headers accepted (a GET has no body).
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request, and to take the answer.
pub const IO_DEADLINE: Duration = Duration::from_secs(5);
/// A connection thread renders a few KiB of text: a small stack is plenty.
const STACK: usize = 128 * 1024;

/// Binds `addr` and serves `metrics` on a thread of its own. Returns the bound address
/// (port 0 picks a free one). Binding errors are returned; after that it never fails.
pub fn spawn(addr: impl ToSocketAddrs, metrics: Arc<Metrics>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .stack_size(STACK)
        .spawn(move || accept(listener, metrics))?;
    Ok(local)
}

fn accept(listener: TcpListener, metrics: Arc<Metrics>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                log::debug!("metrics listener: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = respond(
                &stream,
                &Response::text(503, "busy: too many connections\n"),
            );
            continue;
        }
        let slot = Arc::clone(&active);
        let metrics = Arc::clone(&metrics);
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .stack_size(STACK)
            .spawn(move || {
                if let Err(e) = serve(&stream, &metrics) {
                    log::debug!("metrics listener: {e}");
                }
                slot.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            log::debug!("metrics listener: cannot start a thread: {e}");
        }
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// `Allow: GET` on a 405.
    pub allow_get: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow_get: false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The answer to a request head (request line and headers): pure, so tests table it.
pub fn route(head: &str, metrics: &Metrics) -> Response {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" && path != "/healthz" {
        return Response::text(404, "not found: try /metrics or /healthz\n");
    }
    if method != "GET" {
        let mut r = Response::text(405, "only GET\n");
        r.allow_get = true;
        return r;
    }
    if path == "/metrics" {
        return Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics.render(),
            allow_get: false,
        };
    }
    let verdict = metrics.verdict();
    Response::text(
        if verdict.healthy { 200 } else { 503 },
        format!("{}\n", verdict.reason),
    )
}

/// Reads one request head and answers it.
fn serve(stream: &TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_write_timeout(Some(IO_DEADLINE))?;
    let response = match read_head(stream)? {
        Head::Complete(head) => route(&head, metrics),
        Head::TooLarge => Response::text(431, "request too large\n"),
        Head::TimedOut => Response::text(408, "request not sent in time\n"),
        Head::Closed => return Ok(()),
    };
    respond(stream, &response)
}

enum Head {
    Complete(String),
    TooLarge,
    TimedOut,
    Closed,
}

/// Reads up to the blank line that ends the head, within [`MAX_REQUEST`] bytes and
/// [`IO_DEADLINE`] in all (a client that trickles bytes does not get more time).
fn read_head(mut stream: &TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + IO_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Head::Complete(
                String::from_utf8_lossy(&buf[..end]).into_owned(),
            ));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
}

fn respond(mut stream: &TcpStream, r: &Response) -> io::Result<()> {
    let allow = if r.allow_get { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(r.body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::new();
        // (request head, status, words in the body)
        let cases = [
            (
                "GET /metrics HTTP/1.1\r\nHost: x",
                200,
                "registrator_build_info",
            ),
            ("GET /metrics?x=1 HTTP/1.0", 200, "# TYPE"),
            ("GET /healthz HTTP/1.1", 200, "ok: starting"),
            ("POST /metrics HTTP/1.1", 405, "only GET"),
            ("HEAD /healthz HTTP/1.1", 405, "only GET"),
            ("GET / HTTP/1.1", 404, "/metrics or /healthz"),
            ("GET /metrics/ HTTP/1.1", 404, ""),
            ("DELETE /x HTTP/1.1", 404, ""),
            ("GET /metrics", 400, "bad request line"),
            ("GET /metrics HTTP/2 extra", 400, ""),
            ("GET /metrics SPDY/3", 400, "HTTP/1.x"),
            ("", 400, ""),
        ];
        for (head, status, words) in cases {
            let r = route(head, &m);
            assert_eq!(r.status, status, "{head:?}: {}", r.body);
            assert!(r.body.contains(words), "{head:?}: {}", r.body);
            assert_eq!(r.allow_get, status == 405, "{head:?}");
        }
        let r = route("GET /metrics HTTP/1.1", &m);
        assert_eq!(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn unhealthy_answers_503_with_the_reason() {
        let m = Metrics::new();
        m.configure(Duration::from_secs(1), 10);
        m.lease_granted(0x1f);
        m.lease_lost(0x1f);
        let r = route("GET /healthz HTTP/1.1", &m);
        assert_eq!(r.status, 503);
        assert!(r.body.starts_with("lease 1f is gone"), "{}", r.body);
        assert_eq!(r.body.lines().count(), 1);
    }

    fn fresh() -> Arc<Metrics> {
        Arc::new(Metrics::new())
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_over_tcp_and_closes() {
        let addr = spawn("127.0.0.1:0", fresh()).unwrap();
        let out = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"));
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let out = exchange(addr, b"PUT /healthz HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("Allow: GET\r\n"), "{out}");
        // The probe client of the healthcheck subcommand against the real listener.
        let ok = crate::health::probe(&addr.to_string(), Duration::from_secs(2)).unwrap();
        assert!(ok.starts_with("ok"), "{ok}");
    }

    #[test]
    fn oversized_request_is_refused() {
        let addr = spawn("127.0.0.1:0", fresh()).unwrap();
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 10));
        let out = exchange(addr, &big);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[test]
    fn connections_are_bounded() {
        let addr = spawn("127.0.0.1:0", fresh()).unwrap();
        // Hold every slot with a client that sends nothing.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // The accept loop counts them in order; give it a moment to take them all.
        std::thread::sleep(Duration::from_millis(200));
        let out = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.contains("busy"), "{out}");
        drop(idle);
        // Freed slots serve again (the idle clients closed: their threads end).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n");
            if out.starts_with("HTTP/1.1 200 ") {
                break;
            }
            assert!(Instant::now() < deadline, "never served again: {out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
