//! HTTP/1.1 on the wire, written by hand so the tests see every byte: reading one
//! message head and body off a stream (the relay, the bench's replay Docker API), a
//! keep-alive client for etcd's JSON gateway that the bench's latency polls use (one TCP
//! connection, no pool, no DNS, so a poll costs one round trip and nothing else), and a
//! one-shot GET.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A request or response head: the first line and the headers.
pub struct Head {
    /// The head as it came off the wire, blank line included.
    pub raw: Vec<u8>,
    pub first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request target (`/v1.41/containers/json?x=y`) of a request head.
    pub fn target(&self) -> &str {
        self.first_line.split(' ').nth(1).unwrap_or("")
    }

    /// The status code of a response head.
    pub fn status(&self) -> u16 {
        self.first_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Reads one head; `Ok(None)` on a clean end of stream before its first byte.
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        if r.read_until(b'\n', &mut raw)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside an HTTP head",
            ));
        }
        let line = &raw[start..];
        if line == b"\r\n" || line == b"\n" {
            if start == 0 {
                // Stray blank line between messages: skip it.
                raw.clear();
                continue;
            }
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.lines();
    let first_line = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        first_line,
        headers,
    }))
}

/// Reads the body that follows `head`: returns the bytes as on the wire (to forward
/// verbatim) and the decoded body. A message with neither a length nor chunking has
/// no body (requests; responses here always carry one of the two).
pub fn read_body<R: BufRead>(r: &mut R, head: &Head) -> io::Result<(Vec<u8>, Vec<u8>)> {
    if head.chunked() {
        let (mut raw, mut body) = (Vec::new(), Vec::new());
        loop {
            let start = raw.len();
            r.read_until(b'\n', &mut raw)?;
            let size_line = String::from_utf8_lossy(&raw[start..]).trim().to_string();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {size_line:?}"),
                    )
                })?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let s = raw.len();
                    if r.read_until(b'\n', &mut raw)? == 0
                        || raw[s..] == *b"\r\n"
                        || raw[s..] == *b"\n"
                    {
                        return Ok((raw, body));
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            raw.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let n = head.content_length().unwrap_or(0);
    let mut body = vec![0; n];
    r.read_exact(&mut body)?;
    Ok((body.clone(), body))
}

/// A keep-alive HTTP client for one TCP endpoint (etcd's gateway).
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// A client for `addr`; it connects on the first request.
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    /// POSTs a JSON body; returns the status and the decoded response body. A request
    /// on a reused connection that the server closed meanwhile is sent once more.
    pub fn post(&mut self, path: &str, body: &str) -> io::Result<(u16, Vec<u8>)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let mut last = None;
        for _ in 0..2 {
            match self.exchange(request.as_bytes()) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conn = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no attempt")))
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(3))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.get_mut().write_all(request)?;
        let head = read_head(conn)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))?;
        let (_, body) = read_body(conn, &head)?;
        if head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.conn = None;
        }
        Ok((head.status(), body))
    }
}

/// One `GET path HTTP/1.0` with `Host: host` on a new connection to 127.0.0.1:`port`,
/// connecting and reading within `timeout` each: the status and the body, trimmed.
pub fn get(port: u16, path: &str, host: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("receive: {e}"))?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or(format!("no response head in {out:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status in {head:?}"))?;
    Ok((status, body.trim().to_string()))
}

/// One `GET path HTTP/1.1` to a listener of ours at `addr`, read to the end: the status
/// and the body as sent (untrimmed: `promtool` reads it as a file). Panics on failure.
pub fn get_untrimmed(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}
