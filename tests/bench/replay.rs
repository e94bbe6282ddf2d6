//! A replay Docker API for scales this machine cannot run (1,000 and 10,000
//! containers). It answers `/_ping`, `/containers/json` and `/containers/{id}/json`
//! from responses recorded from the real dockerd 20.10 (`tests/fixtures/`), cloned N
//! times with a new Id, name and published ports each, and it never sends an event:
//! `/events` gets its headers and then stays open and silent, as a quiet host's does.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::common::http::read_head;
use crate::common::relay::{docker_path_kind, Counter};

/// The recorded container that every clone copies: an HTTP service with one port
/// published on 127.0.0.1 (registered) and one on all addresses (ignored by a label).
const TEMPLATE: &str = "web.0";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Clone `i`'s container ID: 64 hex digits that encode `i`.
fn id_of(i: usize) -> String {
    format!("beef{i:060x}")
}

fn index_of(id: &str) -> Option<usize> {
    usize::from_str_radix(id.strip_prefix("beef")?, 16).ok()
}

/// The published host ports of clone `i`: 80/tcp on 127.0.0.1, 443/tcp on all.
fn ports_of(i: usize) -> (u16, u16) {
    (20000 + i as u16, 30000 + i as u16)
}

fn name_of(i: usize) -> String {
    format!("replay-{i}")
}

/// The recorded list entry and inspect answer of the template container.
struct Recorded {
    entry: Value,
    inspect: Value,
}

impl Recorded {
    fn load() -> Recorded {
        let list = fixture("containers_list.json");
        let entry = list
            .as_array()
            .and_then(|l| l.iter().find(|e| e["Names"][0] == format!("/{TEMPLATE}")))
            .cloned()
            .unwrap_or_else(|| panic!("no /{TEMPLATE} in containers_list.json"));
        Recorded {
            entry,
            inspect: fixture(&format!("inspect_{TEMPLATE}.json")),
        }
    }

    fn entry(&self, i: usize) -> Value {
        let (http, https) = ports_of(i);
        let mut e = self.entry.clone();
        e["Id"] = Value::from(id_of(i));
        e["Names"] = serde_json::json!([format!("/{}", name_of(i))]);
        for p in e["Ports"].as_array_mut().expect("recorded Ports") {
            let public = if p["PrivatePort"] == 80 { http } else { https };
            p["PublicPort"] = Value::from(public);
        }
        e
    }

    fn inspect(&self, i: usize) -> Value {
        let (http, https) = ports_of(i);
        let id = id_of(i);
        let mut v = self.inspect.clone();
        v["Config"]["Hostname"] = Value::from(&id[..12]);
        v["Id"] = Value::from(id);
        v["Name"] = Value::from(format!("/{}", name_of(i)));
        let ports = v["NetworkSettings"]["Ports"]
            .as_object_mut()
            .expect("recorded NetworkSettings.Ports");
        for (port, bindings) in ports.iter_mut() {
            let public = if port == "80/tcp" { http } else { https };
            for b in bindings.as_array_mut().into_iter().flatten() {
                b["HostPort"] = Value::from(public.to_string());
            }
        }
        v
    }
}

/// A running replay server.
pub struct Replay {
    pub counter: Arc<Counter>,
    /// Keys one clone registers (from the template's recorded configuration).
    pub keys_per_service: usize,
    path: PathBuf,
}

impl Replay {
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct State {
    n: usize,
    list: Vec<u8>,
    recorded: Recorded,
    counter: Arc<Counter>,
}

/// Serves `n` clones on the unix socket `path`.
pub fn start(path: &Path, n: usize) -> io::Result<Replay> {
    assert!(n <= 10_000, "published ports of the clones would overflow");
    let recorded = Recorded::load();
    let entries: Vec<Value> = (0..n).map(|i| recorded.entry(i)).collect();
    let mut list = serde_json::to_vec(&entries)?;
    list.push(b'\n');
    let counter = Arc::new(Counter::default());
    let state = Arc::new(State {
        n,
        list,
        recorded,
        counter: counter.clone(),
    });
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || serve(conn, &state));
        }
    });
    // address, port, mode, node and one domains/<d> per recorded SERVICE_DOMAINS entry.
    Ok(Replay {
        counter,
        keys_per_service: 5,
        path: path.to_path_buf(),
    })
}

fn respond(w: &mut UnixStream, status: &str, content_type: &str, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nContent-Type: {content_type}\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24 (linux)\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    w.write_all(&msg)
}

fn serve(conn: UnixStream, state: &State) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    while let Ok(Some(head)) = read_head(&mut r) {
        let target = head.target().to_string();
        let kind = docker_path_kind(&target);
        state.counter.add(&kind, 1);
        let path = target.split('?').next().unwrap_or("");
        let sent = match kind.as_str() {
            "ping" => respond(&mut w, "200 OK", "text/plain; charset=utf-8", b"OK"),
            "list" => respond(&mut w, "200 OK", "application/json", &state.list),
            "inspect" => {
                let id = path.rsplit('/').nth(1).unwrap_or("");
                match index_of(id).filter(|&i| i < state.n) {
                    Some(i) => {
                        let mut body =
                            serde_json::to_vec(&state.recorded.inspect(i)).unwrap_or_default();
                        body.push(b'\n');
                        respond(&mut w, "200 OK", "application/json", &body)
                    }
                    None => respond(
                        &mut w,
                        "404 Not Found",
                        "application/json",
                        format!("{{\"message\":\"No such container: {id}\"}}\n").as_bytes(),
                    ),
                }
            }
            "events" => {
                // Headers now, then silence until the client goes away.
                let head = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nServer: Docker/20.10.24 (linux)\r\nTransfer-Encoding: chunked\r\n\r\n";
                if w.write_all(head.as_bytes()).is_ok() {
                    let mut sink = [0u8; 1024];
                    while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
                }
                return;
            }
            _ => respond(
                &mut w,
                "404 Not Found",
                "application/json",
                b"{\"message\":\"page not found\"}\n",
            ),
        };
        if sent.is_err() {
            return;
        }
    }
}
