//! HTTP agents: the unix-socket transport for the Docker API, TCP/TLS agents, and TLS
//! settings read from PEM files (etcd's and Docker's).
//!
//! This is the only file that touches ureq's `unversioned::transport` API, which may
//! change in a minor release (Cargo.toml pins the minor version). ureq's own `tcp.rs`
//! is the model: honest `is_open` probing and per-read/per-write timeouts, so pooled
//! connections that the server closed are noticed instead of failing at random.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ureq::config::Config;
use ureq::http::Uri;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};
use ureq::Agent;

/// Per-connection I/O buffer size. ureq's default 128 KiB per direction and
/// connection dominated resident memory; answers stream through, and headers fit.
pub const BUFFER: usize = 16 * 1024;

/// The settings every agent of ours shares: HTTP errors are answers to classify (not
/// transport failures), no proxy from the environment, small buffers. Callers add their
/// timeouts (and TLS) and build.
pub fn agent_config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .input_buffer_size(BUFFER)
        .output_buffer_size(BUFFER)
}

/// TLS settings from PEM files: the CA bundle to trust (None: the Mozilla roots built
/// in) and a client certificate with its key. Errors name the file and what it is.
pub fn tls_files(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<TlsConfig, String> {
    let mut tls = TlsConfig::builder();
    if let Some(ca) = ca {
        let certs = pem_certs(&read_file("CA bundle", ca)?);
        if certs.is_empty() {
            return Err(format!(
                "CA bundle {} holds no PEM certificate",
                ca.display()
            ));
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    if let Some((cert, key)) = client {
        let chain = pem_certs(&read_file("client certificate", cert)?);
        if chain.is_empty() {
            return Err(format!(
                "client certificate {} holds no PEM certificate",
                cert.display()
            ));
        }
        let key_pem = read_file("client key", key)?;
        let key = PrivateKey::from_pem(&key_pem)
            .map_err(|e| format!("client key {}: {e}", key.display()))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(tls.build())
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn pem_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// Connect timeout for the unix socket when the agent's configuration sets none.
pub const UNIX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Host name used in URLs sent over the Docker unix socket (`http://docker/...`).
pub const UNIX_HOST: &str = "docker";

/// An agent whose every request goes to the unix socket at `path`.
pub fn unix_agent(path: PathBuf, config: Config) -> Agent {
    let connector = ().chain(UnixConnector { path });
    Agent::with_parts(config, connector, NoResolver)
}

/// Opens a connection to one unix socket, whatever the URL's host.
#[derive(Debug)]
struct UnixConnector {
    path: PathBuf,
}

impl<In: Transport> Connector<In> for UnixConnector {
    type Out = Either<In, UnixTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(c) = chained {
            return Ok(Some(Either::A(c)));
        }
        let timeout = details
            .timeout
            .not_zero()
            .map_or(UNIX_CONNECT_TIMEOUT, |d| *d);
        let stream = connect_unix(&self.path, timeout).map_err(|e| {
            use std::os::unix::fs::FileTypeExt;
            let not_socket =
                std::fs::metadata(&self.path).is_ok_and(|m| !m.file_type().is_socket());
            let why = if not_socket {
                "it is not a unix socket".to_string()
            } else {
                e.to_string()
            };
            ureq::Error::Io(io::Error::new(
                e.kind(),
                format!("connect to {}: {why}", self.path.display()),
            ))
        })?;
        let config = details.config;
        let transport = UnixTransport {
            stream: Arc::new(Sock(stream)),
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            write_timeout: None,
        };
        (details.register_shutdown)(Arc::downgrade(&transport.stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(Either::B(transport)))
    }
}

/// Connects to the unix socket at `path`, waiting at most `timeout` (at least 1 ms).
///
/// `UnixStream::connect` can block without end: a daemon that stopped accepting (hung,
/// or SIGSTOPped) fills its listen backlog, and connect then waits for room. Linux
/// bounds that wait by the socket's send timeout (`SO_SNDTIMEO`), so the socket is
/// made by hand, given the timeout, then connected; the wait ends in `EAGAIN`,
/// reported as `TimedOut`.
pub fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    let bytes = path.as_os_str().as_bytes();
    // One byte stays NUL: the kernel reads the path up to it.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path is too long or holds a NUL byte",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: socket(2) takes no pointers; a negative result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns; OwnedFd closes it on every
    // path from here.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // Sets SO_SNDTIMEO; below 1 ms could round to 0, which means "no timeout".
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    loop {
        // SAFETY: `addr` is an initialized sockaddr_un that outlives the call, and `len`
        // does not exceed its size.
        let rc = unsafe {
            libc::connect(
                fd,
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                len as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}: the daemon accepts none"),
                ))
            }
            _ => return Err(e),
        }
    }
    // The transport sets its own write timeouts and assumes it starts with none.
    stream.set_write_timeout(None)?;
    Ok(stream)
}

/// The socket, shared (weakly) with the agent so `Agent::shutdown` can interrupt I/O.
#[derive(Debug)]
struct Sock(UnixStream);

/// A connection over a unix socket.
#[derive(Debug)]
pub struct UnixTransport {
    stream: Arc<Sock>,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl ShutdownHandle for Sock {
    fn shutdown(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

fn io_error(e: io::Error, timeout: &NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let t = timeout.not_zero().map(|d| *d);
        if t != self.write_timeout {
            self.stream.0.set_write_timeout(t)?;
            self.write_timeout = t;
        }
        let output = &self.buffers.output()[..amount];
        (&self.stream.0)
            .write_all(output)
            .map_err(|e| io_error(e, &timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let t = timeout.not_zero().map(|d| *d);
        if t != self.read_timeout {
            self.stream.0.set_read_timeout(t)?;
            self.read_timeout = t;
        }
        let input = self.buffers.input_append_buf();
        let n = loop {
            match (&self.stream.0).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| io_error(e, &timeout))?,
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    /// A non-blocking one-byte probe: a server that closed the idle connection reads
    /// as EOF; unexpected bytes also mean the connection is not reusable.
    fn is_open(&mut self) -> bool {
        let probe = || -> io::Result<bool> {
            self.stream.0.set_nonblocking(true)?;
            let mut buf = [0u8; 1];
            let read = (&self.stream.0).read(&mut buf);
            let open = matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            self.stream.0.set_nonblocking(false)?;
            Ok(open)
        };
        probe().unwrap_or(false)
    }
}

/// The unix socket needs no DNS: every host resolves to a placeholder address, which
/// also keys ureq's connection pool.
#[derive(Debug)]
struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1)));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    /// A listening socket in the temp dir, removed when dropped.
    struct Listener {
        path: PathBuf,
        inner: UnixListener,
    }

    impl Listener {
        fn new(tag: &str) -> Listener {
            let path = std::env::temp_dir().join(format!("reg-{tag}-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let inner = UnixListener::bind(&path).unwrap();
            Listener { path, inner }
        }

        /// A daemon that stopped accepting: a backlog of 0 and one connection in it,
        /// so the next connect has to wait for room.
        fn full(tag: &str) -> (Listener, UnixStream) {
            let l = Listener::new(tag);
            // SAFETY: listen(2) on a listening socket we own only changes its backlog.
            assert_eq!(unsafe { libc::listen(l.inner.as_raw_fd(), 0) }, 0);
            let first = UnixStream::connect(&l.path).unwrap();
            (l, first)
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn connects_and_leaves_no_write_timeout() {
        let l = Listener::new("connect");
        let s = connect_unix(&l.path, Duration::from_secs(1)).unwrap();
        assert_eq!(s.write_timeout().unwrap(), None);
        let (_peer, _) = l.inner.accept().unwrap();
    }

    #[test]
    fn connect_errors() {
        let missing = std::env::temp_dir().join("reg-no-such-socket.sock");
        let e = connect_unix(&missing, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let e = connect_unix(&long, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn a_daemon_that_accepts_nothing_times_the_connect_out() {
        let (l, _first) = Listener::full("full");
        let start = Instant::now();
        let e = connect_unix(&l.path, Duration::from_millis(200)).unwrap_err();
        let took = start.elapsed();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn the_agent_applies_its_connect_timeout_to_the_socket() {
        let (l, _first) = Listener::full("agent");
        let config = agent_config()
            .timeout_connect(Some(Duration::from_millis(300)))
            .build();
        let agent = unix_agent(l.path.clone(), config);
        let start = Instant::now();
        let e = agent
            .get(format!("http://{UNIX_HOST}/_ping"))
            .call()
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        let text = e.to_string();
        assert!(
            text.contains(&l.path.display().to_string()) && text.contains("no connection within"),
            "{text}"
        );
    }
}
