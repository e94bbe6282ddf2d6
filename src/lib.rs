//! etcd-registrator: keeps the published ports of one Docker host's containers
//! registered in etcd v3. The binary (`src/main.rs`) parses, sets up, runs and exits;
//! everything else lives here so the examples, tests and bench reuse it. The README is
//! the user's manual; this page is the design and the map of the code.
//!
//! # Shape: a pure core, the daemons behind two traits
//!
//! The core is pure and table-tested: containers become services (`service`), services
//! become keys, and desired keys against stored keys become a plan of ops (`plan`): no
//! network, clock or DNS, ordered maps so output and tests are stable, and ops that print
//! both as log lines and as `--dry-run` output. The reconciler (`reconcile`) drives it and
//! sees the daemons only in its own words: `source::Source` (the containers it reads;
//! `docker` implements it) and `store::Store` (keys, guarded transactions, leases, and a
//! neutral `StoreError`; `etcd` implements it). Its unit tests run whole passes against
//! the fakes (`reconcile/fakes.rs`: an in-memory etcd with revisions, leases and guards,
//! and a scripted Docker) and assert what a pass asks for, call by call. Wire types stay
//! private to the client that speaks their API; base64 lives only in `etcd/codec.rs`;
//! ureq's unversioned transport API only in `transport.rs`. Errors carry their context
//! (operation, key or container, endpoint); only `main` exits.
//!
//! # A pass
//!
//! Level-triggered: read Docker's containers, compute the desired services, read what
//! this host has in etcd, plan the difference, check port claims, write. Both sides are
//! recomputed every pass; an in-memory picture of etcd is never trusted over etcd. Docker
//! events only wake the loop (with a fast path for the one container they name); a full
//! pass runs at least once per interval whatever the event rate, so a missed or coalesced
//! event loses nothing. While passes fail, events take no fast path and bring nothing
//! forward: the pass after the backoff settles them.
//!
//! A host never reads the whole prefix. Its ownership index (beside the prefix; the
//! layout is in `keys.rs`) names its services and claims; a quiet pass reads the lease's key list
//! (`lease/timetolive`, which also shows the index entries) and one transaction of this
//! host's service directories (with `--ttl 0`, its part of the index too). There is no
//! older layout to migrate from. Ownership is the `node` marker in every directory, and
//! every write is a transaction guarded by it (`node` still ours, or absent); a service's
//! index entry goes in the same transaction, on the same lease.
//!
//! Writes (`reconcile/writer.rs`, the one place that honours `--dry-run`): each op a
//! guarded transaction, batched up to etcd's 128 ops. A service of more than 128 keys is
//! written in parts: the first carries the op's guard, `node` and the index entry, each
//! later one is guarded by `node`, and `address`, `port` and `mode` come last, so a
//! consumer that routes only complete services never routes a partial one. etcd's
//! refusals are sorted by scope (`etcd/error.rs`): refused for what it carries (too many
//! ops, too large) is split in halves until the parts pass, and an op refused alone is
//! that service's problem; refused for the whole cluster (out of space, too many
//! requests, no leader) is `StoreError::cluster`, which ends the pass and backs the loop
//! off. A port claim reads that port's claimants only (`<idx>/claims/<field>/<port>/`)
//! and writes the claim and its services in one transaction guarded by that range's mod
//! revision: two hosts racing for a free port cannot both win.
//!
//! # Identity: no rule rests on time
//!
//! Each process grants a lease of its own and never refreshes another's, so a lease that
//! someone refreshes is a live process's (a stalled one, a paused VM). The instance key
//! (`<idx>/instance/<host>`, on the lease) makes a graceful restart instant (`released`)
//! and a simultaneous start a transaction race with one winner. A newcomer that finds the
//! key held registers only what is not registered, on its own lease, and reads the other
//! leases on its host's keys once a second (five times a second when one is due):
//! etcd reports whole seconds left, rounded down, so a lease left alone has at most
//! `first - floor(elapsed)` left, with `elapsed` measured from the first answer to the
//! later request so it never overstates. More than that: refreshed, a twin, and the
//! newcomer revokes its lease and exits 1. Gone: the identity is free. A reading from
//! another raft term starts over (a new leader extends every lease), a lease is
//! forgotten only once read as gone, and while waiting the event fast path only
//! registers, so nothing another process owns is ever deleted. A write the live
//! process lost to a starting twin is retried within a second. Without a role on the
//! index prefix there is no instance key: the leases alone tell, and two registrators
//! started at the same moment are told apart only by the first keepalive.
//! (`reconcile/identity.rs`, `reconcile/lease.rs`.)
//!
//! # Where each concern lives
//!
//! - `cli/`: the command line, validated without syscalls: dispatch (`mod`), the run
//!   options (`run`), the registry URI (`registry`), `DOCKER_HOST` and Docker's TLS
//!   variables (`docker_host`), `ls` and `healthcheck` options, help texts (`help`), the
//!   reader that also takes each option from `REGISTRATOR_<OPTION>` (`args`), gliderlabs's
//!   spellings (`compat`), usage errors (`error`).
//! - `setup.rs`: from the parsed options to the parts that run, once (host name,
//!   credentials, clients, metrics). `app.rs`: running them (`--once`, the loop and its
//!   threads, `ls`).
//! - `service/`: containers -> services (pure): the model and refusal kinds (`model`),
//!   `SERVICE_*` variables (`meta`), names and IDs (`naming`), ports and addresses
//!   (`address`). `plan.rs`: services -> keys -> ops (pure).
//! - `keys.rs`: the key layout, in one place: service directories, the index, claim and
//!   instance keys, the default index prefix; built and parsed there only.
//! - `reconcile/`: the reconciler's options and state (`mod.rs`), one pass (`pass.rs`),
//!   the writer (`writer.rs`), the lease (`lease.rs`), this host's identity
//!   (`identity.rs`), port claims as pure checks and their grace (`claims.rs`), what the
//!   index says (`index.rs`), what is logged once while it lasts (`report.rs`), the event
//!   fast path (`event.rs`), the loop and its wake-ups (`run.rs`), `--deregister-on-exit`
//!   (`exit.rs`), and the unit tests' fakes (`fakes.rs`).
//! - `store.rs`, `source.rs`: the store and the source in the core's words (traits, their
//!   errors, the source's change kinds).
//! - `etcd/`: the v3 JSON gateway client: connection and failover (`conn`), wire types
//!   (`wire`), status codes (`codes`), errors and their scope (`error`), base64 and
//!   ranges (`codec`).
//! - `docker/`: the Docker API client (and Podman's gaps): list, inspect and version
//!   negotiation (`mod`), wire types (`wire`), the event stream and its vocabulary
//!   (`events`), errors (`error`). `events.rs`: the thread that follows the stream.
//! - `transport.rs`: HTTP agents: the unix-socket transport, TCP/TLS, TLS from PEM files.
//! - `backoff.rs`: jittered, capped retries, one log line per failure; `keepalive.rs`: the
//!   lease's keepalive thread; `signals.rs`: SIGTERM/SIGINT as a message to the loop.
//! - `metrics/`: the counters, handed to each part that records (no global): recording
//!   and labels (`mod`), the text exposition (`text`), `/proc` (`process`). `health.rs`:
//!   the verdict and the `healthcheck` probe; `http.rs`: the `--metrics-addr` listener.
//! - `ls.rs`: `registrator ls`. `logging.rs`: the log line formats. `hostaddr.rs`: this
//!   host's address for ports published on all interfaces (never loopback).
//!
//! Outside `src/`: the integration tests, their helpers (`tests/common/`), fixtures and
//! benchmark (tests/README.md), and the HAProxy consumer example (`tests/examples/haproxy/`).
//!
//! # Choices worth knowing
//!
//! - The index lives at `.registrator/<last segment>` under the prefix's parent, not at
//!   `<prefix>.index`: a consumer reading the prefix without its trailing `/` (`etcdctl get
//!   --prefix /services`) would see the latter.
//! - Containers named by `die`, `stop`, `pause` and `health_status` events are inspected on
//!   the next pass: dockerd updates its list only after logging those events.
//! - A claim stays for `--claim-grace` after the last service that claimed it went,
//!   counted from the first full pass that sees neither a container nor a stored directory
//!   of it; even another service of the same host cannot take the port meanwhile.
//! - `--deregister-on-exit` uses an etcd client of its own (the signal thread interrupts
//!   the loop's after 0.7 s) and gets 5 s from the first signal.
//! - Log timestamps come from our own formatter (`logging.rs`, RFC 3339 in UTC from the
//!   system clock), which keeps `env_logger` without its time dependency; JSON fields come
//!   from the `log` crate's key-values.

pub mod app;
pub mod backoff;
pub mod cli;
pub mod docker;
pub mod etcd;
pub mod events;
pub mod health;
pub mod hostaddr;
pub mod http;
pub mod keepalive;
pub mod keys;
pub mod logging;
pub mod ls;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod service;
pub mod setup;
pub mod signals;
pub mod source;
pub mod store;
pub mod transport;
