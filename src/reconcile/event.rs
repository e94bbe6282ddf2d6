//! The event fast path: within milliseconds of a container event, write or delete that
//! one container's services; the full pass that always follows settles anything subtle.

use std::collections::BTreeSet;

use super::{Outcome, Reconciler, SyncError};
use crate::plan::{self, Desired};
use crate::service::{self, Container};
use crate::source::{Change, Source};
use crate::store::Store;

/// What the fast path knows between passes. Only it uses this picture (to know what a
/// container had registered); every full pass reads Docker and etcd again.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The last pass's containers, updated by events since.
    containers: Vec<Container>,
    /// The last pass's desired services, updated by events since.
    pub(super) desired: Desired,
    /// Containers named by events since the last pass, which it inspects for their
    /// live state: Docker's list lags behind its events.
    pub(super) touched: BTreeSet<String>,
}

impl Seen {
    /// Starts over from what a full pass found.
    pub(super) fn remember(&mut self, containers: Vec<Container>, desired: Desired) {
        self.containers = containers;
        self.desired = desired;
    }
}

impl<S: Source, K: Store> Reconciler<S, K> {
    /// The fast path for one container event: inspects only that container and writes
    /// only its services (or deletes them), in one transaction, so a change is visible
    /// in milliseconds. It reuses the last pass's container list for host-level
    /// conflicts and leaves anything subtle (cluster-wide port claims, changed
    /// services) to the full pass that always follows.
    pub fn on_event(&mut self, change: Change, id: &str) -> Result<(), SyncError> {
        let gone = self.note_event(change, id);
        // Before the first pass there is nothing to compare with; without the lease the
        // keys need, the full pass must come first.
        if !self.started || (self.opts.ttl > 0 && self.lease() == 0) {
            return Ok(());
        }
        let fresh = if gone { None } else { self.source.inspect(id)? };
        let waiting = self.identity.waiting(self.exclusive());
        let seen = &mut self.seen;
        let Some(name) = fresh
            .as_ref()
            .or_else(|| seen.containers.iter().find(|c| c.id == id))
            .map(|c| c.name.clone())
        else {
            return Ok(());
        };
        seen.containers.retain(|c| c.id != id);
        seen.containers.extend(fresh);
        let (services, _) = service::services(&seen.containers, &self.settings);
        let mine: Desired = plan::desired(&services, &self.opts.hostname)
            .into_iter()
            .filter(|(_, w)| w.container == name)
            .collect();
        let mut ops = plan::plan_event(&seen.desired, &mine, &name);
        if waiting {
            // Another process may own what this container's directory holds: register
            // only what is new (each guarded by its absence) and remember nothing, so no
            // later event deletes it; the full passes settle the rest.
            ops.retain(|op| matches!(op, plan::Op::Register { .. }));
        } else {
            seen.desired.retain(|_, w| w.container != name);
            seen.desired.extend(mine);
        }
        let mut outcome = Outcome::default();
        self.writer().apply_guess(&ops, &mut outcome)?;
        self.reports.refused(outcome.problems, false, &self.metrics);
        Ok(())
    }
}

impl<S, K> Reconciler<S, K> {
    /// Notes an event for the next full pass, which inspects a container that went down
    /// or changed health: dockerd updates its list only after it logs these (a start is
    /// listed before it is logged). Returns whether the container went down.
    pub(super) fn note_event(&mut self, change: Change, id: &str) -> bool {
        let gone = change == Change::Down;
        if gone || change == Change::Health {
            self.seen.touched.insert(id.to_string());
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};
    use crate::source::Change;

    #[test]
    fn a_pass_after_die_trusts_inspect_over_the_lagging_list() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        assert_eq!(r.store.counts(), (8, 2));
        // Container 1 died: inspect knows, the list still says running (as dockerd's
        // does until its cleanup finishes).
        r.source.dead.insert("id1".into());
        r.on_event(Change::Down, "id1").unwrap();
        assert_eq!(
            r.store.counts(),
            (4, 1),
            "the fast path deregistered it, index entry and all"
        );
        r.source.inspects = 0;
        let out = r.sync().unwrap();
        assert_eq!(
            out.applied, 0,
            "no flap: the dead container is not registered again"
        );
        assert_eq!(r.store.counts(), (4, 1));
        assert_eq!(
            r.source.inspects, 1,
            "only the container the event named is inspected"
        );
        r.source.inspects = 0;
        r.sync().unwrap();
        assert_eq!(r.source.inspects, 0, "a quiet pass inspects nothing");
    }

    #[test]
    fn a_start_registers_at_once_and_nothing_before_the_first_pass() {
        let mut r = reconciler(FakeDocker::default(), FakeEtcd::default(), "h", 30);
        r.source.containers.push(container(1, &[]));
        r.on_event(Change::Up, "id1").unwrap();
        assert!(r.store.kv.is_empty(), "no pass yet: the fast path waits");
        r.sync().unwrap();
        assert_eq!(r.store.counts(), (4, 1));
        r.source.containers.push(container(2, &[]));
        r.on_event(Change::Up, "id2").unwrap();
        assert_eq!(
            r.store.counts(),
            (8, 2),
            "registered (and indexed) by the fast path"
        );
        assert_eq!(r.sync().unwrap().applied, 0, "the full pass agrees");
    }
}
