//! `--autoscale MAX,MIN`: how big the pool should be, as Celery's
//! autoscaler decides it (`celery/worker/autoscale.py`).
//!
//! The decision is a pure function of the load, the limits and the time
//! ([`decide`]); [`Autoscaler`] only remembers when work was last seen. The
//! supervisor measures the load (its busy children, and the messages waiting
//! in the node's queues, read once a second) and applies the target by
//! growing or retiring slots, as TTIN/TTOU do.
//!
//! Celery counts its reserved requests (prefetched and running); rmulti's
//! children reserve only when idle, so the same quantity is busy children
//! plus messages waiting in the queues.

use std::time::{Duration, Instant};

use crate::cli::AutoscaleArg;

/// Celery's `AUTOSCALE_KEEPALIVE`: no shrinking until this long after the
/// last growth or the last work seen.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// How often the supervisor measures the load and asks for a decision.
pub const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max: usize,
    /// At least 1: a node with no child would consume nothing.
    pub min: usize,
    pub keepalive: Duration,
}

impl Policy {
    /// The policy of `--autoscale`, with `AUTOSCALE_KEEPALIVE` (seconds) read as Celery does.
    pub fn from_arg(arg: AutoscaleArg, keepalive_env: Option<&str>) -> Policy {
        let keepalive = keepalive_env
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_KEEPALIVE);
        let min = arg.min.max(1);
        Policy {
            max: arg.max.max(min),
            min,
            keepalive,
        }
    }
}

/// What the pool has to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    /// Children running a task.
    pub busy: usize,
    /// Messages waiting in the node's queues.
    pub waiting: usize,
}

impl Load {
    fn demand(self) -> usize {
        self.busy.saturating_add(self.waiting)
    }
}

/// The pool size to have, given the `current` one. `last_active` is when the
/// pool last grew or last had work (None: never).
pub fn decide(
    policy: &Policy,
    current: usize,
    load: Load,
    last_active: Option<Instant>,
    now: Instant,
) -> usize {
    let demand = load.demand();
    let up = demand.min(policy.max);
    if up > current {
        return up;
    }
    let down = demand.max(policy.min);
    let quiet_long_enough =
        last_active.is_none_or(|t| now.saturating_duration_since(t) > policy.keepalive);
    if down < current && quiet_long_enough {
        return down;
    }
    // Out of bounds (a TTIN/TTOU or HUP moved it): back inside them.
    current.clamp(policy.min, policy.max)
}

/// [`decide`] with the memory of when work was last seen.
#[derive(Debug)]
pub struct Autoscaler {
    pub policy: Policy,
    last_active: Option<Instant>,
    next_check: Instant,
}

impl Autoscaler {
    pub fn new(policy: Policy, now: Instant) -> Autoscaler {
        Autoscaler {
            policy,
            last_active: Some(now),
            next_check: now,
        }
    }

    /// Whether a measurement is due (once per [`INTERVAL`]).
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_check
    }

    /// Takes one measurement; returns the new target if it differs from `current`.
    pub fn tick(&mut self, current: usize, load: Load, now: Instant) -> Option<usize> {
        self.next_check = now + INTERVAL;
        if load.demand() > 0 {
            self.last_active = Some(now);
        }
        let target = decide(&self.policy, current, load, self.last_active, now);
        if target > current {
            self.last_active = Some(now);
        }
        (target != current).then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: usize, min: usize) -> Policy {
        Policy {
            max,
            min,
            keepalive: Duration::from_secs(30),
        }
    }

    fn load(busy: usize, waiting: usize) -> Load {
        Load { busy, waiting }
    }

    #[test]
    fn grows_to_the_demand_at_once_but_not_past_max() {
        let t = Instant::now();
        let p = policy(10, 2);
        assert_eq!(decide(&p, 2, load(2, 3), Some(t), t), 5);
        assert_eq!(decide(&p, 2, load(2, 50), Some(t), t), 10);
    }

    #[test]
    fn shrinks_only_after_the_keepalive_and_not_below_min() {
        let t = Instant::now();
        let p = policy(10, 2);
        assert_eq!(
            decide(&p, 8, load(1, 0), Some(t), t + Duration::from_secs(5)),
            8
        );
        assert_eq!(
            decide(&p, 8, load(1, 0), Some(t), t + Duration::from_secs(31)),
            2
        );
        assert_eq!(
            decide(&p, 8, load(4, 0), Some(t), t + Duration::from_secs(31)),
            4
        );
    }

    #[test]
    fn steady_load_keeps_the_size() {
        let t = Instant::now();
        assert_eq!(decide(&policy(10, 2), 4, load(4, 0), Some(t), t), 4);
    }

    #[test]
    fn an_out_of_bounds_size_comes_back_inside() {
        let t = Instant::now();
        assert_eq!(decide(&policy(4, 2), 6, load(6, 0), Some(t), t), 4);
        assert_eq!(decide(&policy(4, 2), 1, load(0, 0), Some(t), t), 2);
    }

    #[test]
    fn autoscaler_waits_for_quiet_after_growing() {
        let t = Instant::now();
        let mut a = Autoscaler::new(policy(6, 1), t);
        assert_eq!(a.tick(1, load(1, 5), t), Some(6));
        // Work drains: no shrink until 30 s after the last work seen.
        let quiet = t + Duration::from_secs(10);
        assert_eq!(a.tick(6, load(0, 0), quiet), None);
        assert_eq!(a.tick(6, load(0, 0), t + Duration::from_secs(29)), None);
        assert_eq!(a.tick(6, load(0, 0), t + Duration::from_secs(31)), Some(1));
    }

    #[test]
    fn keepalive_comes_from_the_environment_as_celery() {
        let arg = AutoscaleArg { max: 3, min: 0 };
        let p = Policy::from_arg(arg, Some("2.5"));
        assert_eq!(p.keepalive, Duration::from_millis(2500));
        assert_eq!((p.max, p.min), (3, 1));
        assert_eq!(
            Policy::from_arg(arg, Some("x")).keepalive,
            DEFAULT_KEEPALIVE
        );
    }
}
