//! What the reconciler tells the operator about services it could not register: each
//! problem logged once while it lasts (not on every pass), notes likewise at info, and
//! the refusals in force counted in the metrics by kind.

use std::collections::BTreeSet;

use crate::metrics::Metrics;
use crate::service::{Note, Problem};

/// The problems and notes logged and still true.
#[derive(Debug, Default)]
pub(super) struct Reports {
    /// Services refused (bad input, conflicts, held ports): each logged once.
    pub(super) reported: BTreeSet<Problem>,
    /// Notes (a container's network picked among several).
    noted: BTreeSet<Note>,
    /// Services etcd refused to store, logged and still refused.
    pub(super) refused: BTreeSet<Problem>,
}

impl Reports {
    /// A full pass's problems: those new are logged, those gone forgotten.
    pub(super) fn problems(&mut self, problems: Vec<Problem>, metrics: &Metrics) {
        let now: BTreeSet<Problem> = problems.into_iter().collect();
        for p in now.difference(&self.reported) {
            log::error!(container = p.container.as_str(); "{p}");
        }
        self.reported = now;
        self.count(metrics);
    }

    /// A problem found between passes: logged unless it already was, and kept.
    pub(super) fn one(&mut self, problem: Problem, metrics: &Metrics) {
        if self.reported.insert(problem.clone()) {
            log::error!(container = problem.container.as_str(); "{problem}");
        }
        self.count(metrics);
    }

    /// A pass's notes, logged (info) once while they stay true.
    pub(super) fn notes(&mut self, notes: Vec<Note>) {
        let now: BTreeSet<Note> = notes.into_iter().collect();
        for n in now.difference(&self.noted) {
            log::info!("{n}");
        }
        self.noted = now;
    }

    /// Writes etcd refused, each logged once while it keeps refusing it: a full pass's
    /// replace the last (`all`); the fast path's add to them.
    pub(super) fn refused(&mut self, problems: Vec<Problem>, all: bool, metrics: &Metrics) {
        if all {
            self.refused.retain(|p| problems.contains(p));
        }
        for p in problems {
            if !self.refused.contains(&p) {
                log::error!(container = p.container.as_str(); "{p}");
                self.refused.insert(p);
            }
        }
        self.count(metrics);
    }

    /// The refusals in force, by kind: the services refused and those etcd refused.
    fn count(&self, metrics: &Metrics) {
        metrics.set_refused(self.reported.iter().chain(&self.refused).map(|p| p.kind));
    }
}
