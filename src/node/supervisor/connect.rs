//! The `Connecting` phase: the first connection to Redis before the pool
//! forks, attempted when `node::connecting` says it is due; a failure that
//! cannot pass (a refused password, a TLS handshake) fails the start. The
//! node's name is leased (`node::lease`) before its held lists are recovered:
//! a second live node of that name is refused (exit 73).

use super::{Phase, Supervisor};
use crate::broker::{self, BrokerError};
use crate::exit;
use crate::node::connecting::Verdict;

impl Supervisor {
    /// One attempt when due: connect, declare the queues, restore what an
    /// earlier run of this node left held; then the pool may start.
    pub(super) fn connect_when_due(&mut self) {
        let shown = broker::url::masked(&self.cfg.app.broker_url);
        if self.connecting.due() {
            match self.connect() {
                // The name is taken: the start was refused.
                Ok(()) if self.phase == Phase::Cold => return,
                Ok(()) => {
                    tracing::info!("Connected to {shown}");
                    self.connected = true;
                    self.phase = Phase::Starting;
                    return;
                }
                Err(e) => {
                    if let Verdict::Fail(message) = self.connecting.failed(&shown, &e) {
                        tracing::error!("{message}");
                        self.notifier.fail(exit::FAILURE, &message);
                        self.exit_code = exit::FAILURE;
                        self.phase = Phase::Cold;
                        return;
                    }
                }
            }
        }
        let hint = self
            .cfg
            .logfile(0)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the node's log".to_string());
        if let Some(line) = self.connecting.grace_over(&shown, &hint) {
            tracing::warn!("{line}");
            if self.notifier.is_detached() {
                self.notifier.warn(&line);
                self.notifier.ready();
            }
        }
    }

    fn connect(&mut self) -> Result<(), BrokerError> {
        let declared = self
            .recovery
            .broker()
            .and_then(|con| broker::reserve::declare_queues(con, &self.cfg.queues))
            .and_then(|()| self.recovery.check_backend());
        if let Err(e) = declared {
            self.recovery.reset();
            return Err(e);
        }
        // The name first: another live node's held lists are not ours.
        if let Some(why) = self.lease.acquire(self.recovery.broker()?)? {
            tracing::error!("{why}");
            self.notifier.fail(exit::CANTCREAT, &why);
            self.exit_code = exit::CANTCREAT;
            self.phase = Phase::Cold;
            return Ok(());
        }
        match self.recovery.recover_node(&self.cfg.node) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "Restored {n} message(s) held by an earlier run of {} to their queues",
                self.cfg.node
            ),
            Err(e) => tracing::error!("Cannot look for messages held by an earlier run: {e}"),
        }
        self.purge_if_asked();
        Ok(())
    }
}
