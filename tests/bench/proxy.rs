//! Counting proxies: one in front of the Docker unix socket, one in front of etcd's TCP
//! port. Each parses the requests the client sends (to count them by kind) and copies
//! the answers back untouched, chunk by chunk as they arrive, so Docker's `/events`
//! stream keeps flowing through it.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::http::{read_body, read_head, Head};

/// Requests counted by kind, plus the bytes that went each way.
#[derive(Default)]
pub struct Counter {
    counts: Mutex<BTreeMap<String, u64>>,
    /// Client to server.
    pub up: AtomicU64,
    /// Server to client.
    pub down: AtomicU64,
}

/// What a [`Counter`] held at one moment.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub by_kind: BTreeMap<String, u64>,
    pub up: u64,
    pub down: u64,
}

impl Counts {
    pub fn get(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut by_kind = self.by_kind.clone();
        for (k, v) in by_kind.iter_mut() {
            *v -= earlier.get(k);
        }
        by_kind.retain(|_, v| *v > 0);
        Counts {
            by_kind,
            up: self.up - earlier.up,
            down: self.down - earlier.down,
        }
    }
}

impl Counter {
    pub fn add(&self, kind: &str, n: u64) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(kind.to_string())
            .or_default() += n;
    }

    pub fn snapshot(&self) -> Counts {
        Counts {
            by_kind: self.counts.lock().unwrap().clone(),
            up: self.up.load(Ordering::SeqCst),
            down: self.down.load(Ordering::SeqCst),
        }
    }
}

/// Names a request: the kinds it counts as, each with a count.
pub type Classify = fn(&Head, &[u8]) -> Vec<(String, u64)>;

/// A Docker request's kind: `list`, `inspect`, `ping`, `events`, else its path with the
/// API version and any container ID taken out.
pub fn docker_kind(head: &Head, _body: &[u8]) -> Vec<(String, u64)> {
    vec![(docker_path_kind(head.target()), 1)]
}

pub fn docker_path_kind(target: &str) -> String {
    let path = target.split('?').next().unwrap_or("");
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
        }
        _ => path,
    };
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "_ping"] => "ping".into(),
        ["", "containers", "json"] => "list".into(),
        ["", "containers", _, "json"] => "inspect".into(),
        ["", "events"] => "events".into(),
        ["", "containers", _, rest] => format!("/containers/{{id}}/{rest}"),
        _ => path.to_string(),
    }
}

/// An etcd gateway request's kind: the last part of its path (`range`, `timetolive`,
/// `keepalive`, ...); transactions are `txn write` when they put or delete anything
/// (their `put` and `delete` ops are counted too), else `txn read`.
pub fn etcd_kind(head: &Head, body: &[u8]) -> Vec<(String, u64)> {
    let path = head.target().split('?').next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or(path);
    if last == "txn" {
        let text = String::from_utf8_lossy(body);
        let puts = text.matches("\"request_put\"").count() as u64;
        let deletes = text.matches("\"request_delete_range\"").count() as u64;
        if puts + deletes == 0 {
            return vec![("txn read".into(), 1)];
        }
        return vec![
            ("txn write".into(), 1),
            ("put".into(), puts),
            ("delete".into(), deletes),
        ];
    }
    let kind = if path.starts_with("/v3") { last } else { path };
    vec![(kind.to_string(), 1)]
}

/// A stream both proxies can relay over.
trait Duplex: Read + Write + Send + Sized + 'static {
    fn dup(&self) -> io::Result<Self>;
    fn close(&self, how: Shutdown);
}

impl Duplex for UnixStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

impl Duplex for TcpStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

/// A running proxy. Its threads live as long as the bench process; dropping it only
/// removes the unix socket file.
pub struct Proxy {
    pub counter: Arc<Counter>,
    /// `unix:///path` or `127.0.0.1:port`.
    pub address: String,
    socket: Option<PathBuf>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A counting proxy on unix socket `listen` in front of unix socket `upstream`.
pub fn unix(listen: &Path, upstream: &Path, classify: Classify) -> io::Result<Proxy> {
    let _ = std::fs::remove_file(listen);
    let listener = UnixListener::bind(listen)?;
    let counter = Arc::new(Counter::default());
    let (c, up) = (counter.clone(), upstream.to_path_buf());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (c, up) = (c.clone(), up.clone());
            std::thread::spawn(move || {
                if let Ok(server) = UnixStream::connect(&up) {
                    relay(client, server, &c, classify);
                }
            });
        }
    });
    Ok(Proxy {
        counter,
        address: format!("unix://{}", listen.display()),
        socket: Some(listen.to_path_buf()),
    })
}

/// A counting proxy on a free 127.0.0.1 port in front of TCP `upstream`.
pub fn tcp(upstream: SocketAddr, classify: Classify) -> io::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                if let Ok(server) = TcpStream::connect(upstream) {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    relay(client, server, &c, classify);
                }
            });
        }
    });
    Ok(Proxy {
        counter,
        address,
        socket: None,
    })
}

/// Copies answers back on a second thread while this one parses, counts and forwards
/// the requests. Either side closing ends both directions.
fn relay<S: Duplex>(client: S, server: S, counter: &Arc<Counter>, classify: Classify) {
    let (Ok(client_w), Ok(server_r)) = (client.dup(), server.dup()) else {
        return;
    };
    let down = counter.clone();
    let back = std::thread::spawn(move || {
        let mut server_r = server_r;
        let mut client_w = client_w;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match server_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    down.down.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
        client_w.close(Shutdown::Both);
        server_r.close(Shutdown::Both);
    });
    let Ok(mut server_w) = server.dup() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, client);
    while let Ok(Some(head)) = read_head(&mut reader) {
        let Ok((raw_body, body)) = read_body(&mut reader, &head) else {
            break;
        };
        for (kind, n) in classify(&head, &body) {
            counter.add(&kind, n);
        }
        counter
            .up
            .fetch_add((head.raw.len() + raw_body.len()) as u64, Ordering::SeqCst);
        let mut msg = head.raw;
        msg.extend_from_slice(&raw_body);
        if server_w.write_all(&msg).is_err() {
            break;
        }
    }
    server_w.close(Shutdown::Write);
    let _ = back.join();
    reader.get_ref().close(Shutdown::Both);
}
