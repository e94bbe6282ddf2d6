//! HTTP agents: the unix-socket transport for the Docker API, and TCP/TLS agents.
//!
//! This is the only file that touches ureq's `unversioned::transport` API, which may
//! change in a minor release (Cargo.toml pins the minor version). ureq's own `tcp.rs`
//! is the model: honest `is_open` probing and per-read/per-write timeouts, so pooled
//! connections that the server closed are noticed instead of failing at random.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ureq::config::Config;
use ureq::http::Uri;
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
        let stream = UnixStream::connect(&self.path).map_err(|e| {
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
            let open = matches!((&self.stream.0).read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
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
