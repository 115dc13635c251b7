//! The retention watcher: runs a retention pass (`store::retention` says
//! what may go and what never does) at start, every
//! `[retention] every_minutes`, and at once when an operator moves a test
//! clock.

use crate::store::{RetentionPolicy, Store};
use meldnet_core::time::Clock;
use meldnet_core::SpiffeId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Runs the hub's retention passes.
pub struct RetentionWatcher {
    /// The store.
    pub store: Store,
    /// The periods, from `[retention]`.
    pub policy: RetentionPolicy,
    /// The hub's clock: what "older than" is measured on.
    pub clock: Arc<Clock>,
    /// The hub's identity (actor of the audit records).
    pub hub: SpiffeId,
    /// Time between passes.
    pub every: Duration,
    /// Woken when the clock moves.
    pub wake: Arc<Notify>,
}

impl RetentionWatcher {
    /// Runs until `stopping` turns true. Nothing to do when every period
    /// is "for ever".
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        if self.policy == RetentionPolicy::default() {
            return;
        }
        loop {
            let now = self.clock.now_ms();
            match self.store.expire(&self.policy, now, &self.hub).await {
                Ok(out) if out.reports > 0 || out.series_matches > 0 => {
                    tracing::info!(
                        reports = out.reports,
                        series_matches = out.series_matches,
                        kept_queued = out.kept_queued,
                        kept_open_case = out.kept_open_case,
                        kept_location = out.kept_location,
                        kept_damaged = out.kept_damaged,
                        "retention pass erased what expired"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention pass failed; tried again later"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = self.wake.notified() => {}
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
        }
    }
}
