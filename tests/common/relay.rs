//! One relay (a proxy) for the fault suite and the bench, on a TCP port or a unix socket
//! in front of etcd or Docker (TCP or unix). It forwards request by request, counting
//! them by kind and the bytes each way, and copies the answers back as they arrive, so
//! Docker's `/events` stream keeps flowing; or, switched while it runs, it answers
//! garbage, cuts the body short, stalls, slows every request, or cuts etcd transactions.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::{read_body, read_head, Head};

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
    /// Requests of `kind`, 0 if none.
    pub fn get(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// Requests of every kind.
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
    /// Counts `n` requests of `kind`.
    pub fn add(&self, kind: &str, n: u64) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(kind.to_string())
            .or_default() += n;
    }

    /// What it holds now.
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

/// The kind of a Docker request target (see [`docker_kind`]).
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

/// What a relay does with a new connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Forward,
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// A 200 with Content-Length 4096 and 30 bytes of JSON, then close.
    CutBody,
    /// Accept, read, never answer.
    Stall,
    /// Forward everything except etcd transactions that write (`POST /v3/kv/txn` with a
    /// put or a delete), which are cut: reads succeed (read-only transactions
    /// included), writes fail.
    CutTxn,
    /// Forward everything except Docker's event stream, which ends at once (an empty
    /// 200), as a proxy in front of Docker that does not stream would.
    EndEvents,
    /// Forward each request after holding it this long: a slow etcd.
    Slow(Duration),
}

const GARBAGE: &[u8] = b"\x16\x03\x01garbage\x00\xff{{{ not HTTP at all\r\n\r\n\xfe\xfe";
const CUT_BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
    Content-Length: 4096\r\n\r\n{\"header\":{\"cluster_id\":\"12";
const TXN: &str = "POST /v3/kv/txn ";
const EMPTY_200: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
    Content-Length: 0\r\nConnection: close\r\n\r\n";

/// Where a relay forwards to.
#[derive(Clone, Debug)]
pub enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Upstream {
    fn connect(&self) -> io::Result<Stream> {
        match self {
            Upstream::Tcp(addr) => {
                let s = TcpStream::connect(addr)?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Upstream::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }
}

/// One side of a relayed connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }

    /// Ends both directions; every clone of the connection sees it.
    fn close(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// A running relay. Dropping it cuts its connections, stops it listening and removes
/// its unix socket file.
pub struct Relay {
    /// `127.0.0.1:port`, or `unix:///path`: an etcd endpoint or a DOCKER_HOST.
    pub address: String,
    /// What went through in [`Mode::Forward`] and [`Mode::CutTxn`].
    pub counter: Arc<Counter>,
    inner: Arc<Inner>,
    socket: Option<PathBuf>,
}

struct Inner {
    upstream: Upstream,
    mode: Mutex<Mode>,
    classify: Mutex<Option<Classify>>,
    counter: Arc<Counter>,
    /// The client side of every open connection, to cut them on a switch.
    open: Mutex<BTreeMap<u64, Stream>>,
    next_id: AtomicU64,
    stop: AtomicBool,
}

impl Relay {
    /// A relay on a free 127.0.0.1 port in front of `upstream`.
    pub fn tcp(upstream: Upstream, mode: Mode) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let address = listener.local_addr().expect("relay address").to_string();
        Relay::serve(Listener::Tcp(listener), address, None, upstream, mode)
    }

    /// A relay on unix socket `listen` in front of `upstream`.
    pub fn unix(listen: &Path, upstream: Upstream, mode: Mode) -> Relay {
        let _ = std::fs::remove_file(listen);
        let listener = UnixListener::bind(listen)
            .unwrap_or_else(|e| panic!("bind relay {}: {e}", listen.display()));
        let address = format!("unix://{}", listen.display());
        let socket = Some(listen.to_path_buf());
        Relay::serve(Listener::Unix(listener), address, socket, upstream, mode)
    }

    /// Counts the forwarded requests by the kinds `classify` names.
    pub fn counting(self, classify: Classify) -> Relay {
        *self.inner.classify.lock().unwrap() = Some(classify);
        self
    }

    fn serve(
        listener: Listener,
        address: String,
        socket: Option<PathBuf>,
        upstream: Upstream,
        mode: Mode,
    ) -> Relay {
        let counter = Arc::new(Counter::default());
        let inner = Arc::new(Inner {
            upstream,
            mode: Mutex::new(mode),
            classify: Mutex::new(None),
            counter: counter.clone(),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let i = inner.clone();
        std::thread::spawn(move || loop {
            let conn = listener.accept();
            if i.stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let i = i.clone();
            std::thread::spawn(move || i.handle(conn));
        });
        Relay {
            address,
            counter,
            inner,
            socket,
        }
    }

    /// Switches the mode and cuts every open connection, so clients reconnect into it.
    pub fn set(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
        for c in self.inner.open.lock().unwrap().values() {
            c.close();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.set(Mode::Forward);
        // Wake the accept loop so it sees `stop` and closes the listener.
        match &self.socket {
            Some(path) => {
                let _ = UnixStream::connect(path);
                let _ = std::fs::remove_file(path);
            }
            None => {
                let _ = TcpStream::connect(&self.address);
            }
        }
    }
}

impl Inner {
    fn handle(&self, client: Stream) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(c) = client.try_clone() {
            self.open.lock().unwrap().insert(id, c);
        }
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Forward => self.forward(client, false),
            Mode::CutTxn => self.forward(client, true),
            Mode::EndEvents | Mode::Slow(_) => self.forward(client, false),
            Mode::Garbage => answer(client, GARBAGE),
            Mode::CutBody => answer(client, CUT_BODY),
            Mode::Stall => self.stall(client),
        }
        self.open.lock().unwrap().remove(&id);
    }

    /// Copies the answers back on a second thread while this one reads, counts and
    /// forwards the requests. Either side closing ends both directions; with `cut_txn`,
    /// so does the first etcd transaction, which is not forwarded (requests on a
    /// kept-alive connection are cut too).
    fn forward(&self, client: Stream, cut_txn: bool) {
        let Ok(mut server) = self.upstream.connect() else {
            return;
        };
        let (Ok(client_w), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        let end_events = *self.mode.lock().unwrap() == Mode::EndEvents;
        let Ok(mut client_direct) = client.try_clone() else {
            return;
        };
        let counter = self.counter.clone();
        let back = std::thread::spawn(move || {
            let (mut from, mut to) = (server_r, client_w);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        counter.down.fetch_add(n as u64, Ordering::SeqCst);
                    }
                }
            }
            to.close();
            from.close();
        });
        let classify = *self.classify.lock().unwrap();
        let mut reader = BufReader::with_capacity(64 * 1024, client);
        while let Ok(Some(head)) = read_head(&mut reader) {
            if end_events && head.target().contains("/events") {
                for (kind, n) in classify.map(|c| c(&head, &[])).unwrap_or_default() {
                    self.counter.add(&kind, n);
                }
                let _ = client_direct.write_all(EMPTY_200);
                break;
            }
            let Ok((raw_body, body)) = read_body(&mut reader, &head) else {
                break;
            };
            if cut_txn && head.first_line.starts_with(TXN) && writes(&body) {
                break;
            }
            if let Mode::Slow(d) = *self.mode.lock().unwrap() {
                std::thread::sleep(d);
            }
            for (kind, n) in classify.map(|c| c(&head, &body)).unwrap_or_default() {
                self.counter.add(&kind, n);
            }
            self.counter
                .up
                .fetch_add((head.raw.len() + raw_body.len()) as u64, Ordering::SeqCst);
            let mut msg = head.raw;
            msg.extend_from_slice(&raw_body);
            if server.write_all(&msg).is_err() {
                break;
            }
        }
        server.close();
        reader.get_ref().close();
        let _ = back.join();
    }

    /// Reads and never answers, until the client goes, the mode changes or the relay
    /// stops.
    fn stall(&self, mut client: Stream) {
        client.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 4096];
        while !self.stop.load(Ordering::SeqCst) && *self.mode.lock().unwrap() == Mode::Stall {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        client.close();
    }
}

/// Whether an etcd transaction's body writes (a put or a delete).
fn writes(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("request_put") || text.contains("request_delete_range")
}

/// Reads (some of) the request, writes `reply` instead of an answer, closes.
fn answer(mut client: Stream, reply: &[u8]) {
    client.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4096];
    let _ = client.read(&mut buf);
    let _ = client.write_all(reply);
    client.close();
}
