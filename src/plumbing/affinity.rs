//! Which pool child of a node last ran a task, and whether it still waits
//! idle: one word shared by all the node's children (mapped by the main
//! process before it forks any). An idle pool then gives work that comes
//! due (an ETA or a countdown retry) to the child that ran last, as
//! Celery's prefork pool does: the child's process state (a task object's
//! attributes, a warm cache) is where the task left it.
//!
//! The word is `slot << 48 | milliseconds`: the slot that last ran a task
//! and when it last said so; a child that died or got busy stops saying
//! so, and after `fresh` the others stop waiting for it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::progress::now_ms;
use super::shared::{SharedView, SharedWords};

const MS_BITS: u32 = 48;
const MS_MASK: u64 = (1 << MS_BITS) - 1;

/// The node's word; the main process owns it.
#[derive(Debug)]
pub struct Affinity {
    page: SharedWords,
}

impl Affinity {
    pub fn new() -> std::io::Result<Affinity> {
        Ok(Affinity {
            page: SharedWords::new(1)?,
        })
    }

    /// A handle for the children forked after this call.
    pub fn handle(&self) -> AffinityHandle {
        AffinityHandle {
            word: self.page.view(),
        }
    }
}

/// A child's view of the node's word. Slots are numbered from 1.
#[derive(Debug, Clone, Copy)]
pub struct AffinityHandle {
    word: SharedView,
}

impl AffinityHandle {
    fn read(&self) -> (u64, u64) {
        let w = self.word.word(0).load(Ordering::Acquire);
        (w >> MS_BITS, w & MS_MASK)
    }

    fn write(&self, slot: usize) {
        let w = ((slot as u64) << MS_BITS) | (now_ms() & MS_MASK);
        self.word.word(0).store(w, Ordering::Release);
    }

    /// `slot` has just run a task.
    pub fn ran(&self, slot: usize) {
        self.write(slot);
    }

    /// `slot` waits idle: still first in line if it ran last.
    pub fn idle(&self, slot: usize) {
        if self.read().0 == slot as u64 {
            self.write(slot);
        }
    }

    /// Whether `slot` should leave due work to another child: the one that
    /// ran last, which said within `fresh` that it waits idle.
    pub fn defers(&self, slot: usize, fresh: Duration) -> bool {
        let (last, at) = self.read();
        last != 0 && last != slot as u64 && now_ms().saturating_sub(at) < fresh.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_child_that_ran_last_is_waited_for_and_not_for_long() {
        let a = Affinity::new().expect("mmap");
        let (one, two) = (a.handle(), a.handle());
        let fresh = Duration::from_millis(200);
        assert!(!one.defers(1, fresh), "nobody ran yet");
        one.ran(1);
        assert!(two.defers(2, fresh));
        assert!(!one.defers(1, fresh));
        // An idle beat of another slot does not take the place.
        two.idle(2);
        assert!(two.defers(2, fresh));
        assert!(!two.defers(2, Duration::ZERO), "stale: not waited for");
        two.ran(2);
        assert!(one.defers(1, fresh));
        assert!(!two.defers(2, fresh));
    }
}
