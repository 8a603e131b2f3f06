//! A pool child's progress through a batch, in memory shared with the main
//! process: an anonymous `MAP_SHARED` page mapped before the fork, so the
//! child can say which task of its batch it runs with one store, and the
//! main process can read it when the child dies (which of the batch's
//! messages started) or when asked what runs (`inspect active`, USR1).
//! No pipe write, no syscall per task.
//!
//! The main process writes one word back: which tasks of the batch not to
//! start (revoked after the batch was reserved), a bit per position. The
//! child stores its position before it reads that word, the main process
//! sets a bit before it reads the position, both sequentially consistent:
//! so either the child sees the bit, or the main process sees the task
//! started.

use std::sync::atomic::Ordering;

use super::shared::{SharedView, SharedWords};

/// Where a child is in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No batch in hand.
    Idle,
    /// Tasks before `index` are done (results held by the child), none runs.
    Between,
    /// Task `index` runs; the ones before it are done.
    Running,
}

/// One reading of the progress word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The batch's generation (the child's number for it, also in Redis).
    pub gen: u32,
    pub index: u16,
    pub stage: Stage,
    /// When task `index` started, Unix milliseconds (`Running` only).
    pub since_ms: u64,
}

impl Mark {
    pub const IDLE: Mark = Mark {
        gen: 0,
        index: 0,
        stage: Stage::Idle,
        since_ms: 0,
    };

    fn word(&self) -> u64 {
        let phase = match self.stage {
            Stage::Idle => 0u64,
            Stage::Between => 1,
            Stage::Running => 2,
        };
        (u64::from(self.gen) << 32) | (u64::from(self.index) << 16) | phase
    }

    fn from_words(word: u64, since_ms: u64) -> Mark {
        let phase = match word & 0xffff {
            1 => Stage::Between,
            2 => Stage::Running,
            _ => return Mark::IDLE,
        };
        Mark {
            gen: (word >> 32) as u32,
            index: ((word >> 16) & 0xffff) as u16,
            stage: phase,
            since_ms,
        }
    }
}

/// The mapping, owned by the main process's record of the child (unmapped
/// when that record goes). The forked child keeps its copy of the mapping
/// for life: it never drops it, it `_exit`s.
#[derive(Debug)]
pub struct Progress {
    page: SharedWords,
}

/// The most positions the skip word holds (a batch is at most this long).
pub const SKIP_POSITIONS: usize = 32;

impl Progress {
    /// Maps a fresh progress page; to be made before the fork.
    pub fn new() -> std::io::Result<Progress> {
        Ok(Progress {
            page: SharedWords::new(3)?,
        })
    }

    /// Asks the child not to start task `index` of batch `gen`; returns
    /// whether it will not (false: it started it already, or `index` is
    /// beyond what the word holds).
    pub fn skip(&self, gen: u32, index: usize) -> bool {
        if index >= SKIP_POSITIONS {
            return false;
        }
        let bit = 1u64 << index;
        let word = self.page.word(2);
        let _ = word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            Some(if (w >> 32) as u32 == gen {
                w | bit
            } else {
                (u64::from(gen) << 32) | bit
            })
        });
        let now = self.read_seqcst();
        let started = now.gen == gen
            && match now.stage {
                Stage::Running => usize::from(now.index) >= index,
                Stage::Between => usize::from(now.index) > index,
                Stage::Idle => true,
            };
        !started
    }

    fn read_seqcst(&self) -> Mark {
        let word = self.page.word(0).load(Ordering::SeqCst);
        let since = self.page.word(1).load(Ordering::Relaxed);
        Mark::from_words(word, since)
    }

    /// The child's store: the time first, so a reader that sees `Running`
    /// sees its start.
    pub fn set(&self, mark: Mark) {
        self.handle().set(mark);
    }

    pub fn read(&self) -> Mark {
        self.handle().read()
    }

    /// A handle for the child forked after this call.
    pub fn handle(&self) -> ProgressHandle {
        ProgressHandle {
            words: self.page.view(),
        }
    }
}

/// A child's borrowed view of its progress page (the main process owns it).
#[derive(Debug, Clone, Copy)]
pub struct ProgressHandle {
    words: SharedView,
}

impl ProgressHandle {
    pub fn set(&self, mark: Mark) {
        self.words.word(1).store(mark.since_ms, Ordering::Relaxed);
        // SeqCst: ordered before `skipped`'s read (see the module doc).
        self.words.word(0).store(mark.word(), Ordering::SeqCst);
    }

    /// Whether the main process asked not to start task `index` of batch
    /// `gen`; to be asked after `set` put the child on it.
    pub fn skipped(&self, gen: u32, index: usize) -> bool {
        if index >= SKIP_POSITIONS {
            return false;
        }
        let w = self.words.word(2).load(Ordering::SeqCst);
        (w >> 32) as u32 == gen && w & (1u64 << index) != 0
    }

    pub fn read(&self) -> Mark {
        let word = self.words.word(0).load(Ordering::Acquire);
        let since = self.words.word(1).load(Ordering::Relaxed);
        Mark::from_words(word, since)
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_as_written() {
        let p = Progress::new().expect("mmap");
        assert_eq!(p.read(), Mark::IDLE);
        let m = Mark {
            gen: 0xdead_beef,
            index: 31,
            stage: Stage::Running,
            since_ms: 1234,
        };
        p.handle().set(m);
        assert_eq!(p.read(), m);
        p.set(Mark::IDLE);
        assert_eq!(p.handle().read(), Mark::IDLE);
    }

    #[test]
    fn a_skip_reaches_a_task_not_started_and_only_its_batch() {
        let p = Progress::new().expect("mmap");
        let child = p.handle();
        let at = |index: u16, stage| Mark {
            gen: 7,
            index,
            stage,
            since_ms: 1,
        };
        child.set(at(2, Stage::Running));
        assert!(!p.skip(7, 2), "task 2 runs: too late");
        assert!(!p.skip(7, 1), "task 1 ran");
        assert!(p.skip(7, 5));
        assert!(p.skip(7, 3));
        child.set(at(3, Stage::Running));
        assert!(child.skipped(7, 3) && child.skipped(7, 5));
        assert!(!child.skipped(7, 4));
        assert!(!child.skipped(8, 5), "another batch");
        child.set(at(4, Stage::Between));
        assert!(p.skip(7, 4), "between tasks: 4 not started");
        assert!(!p.skip(7, 40), "beyond the word");
        // A new batch starts from a clean word.
        child.set(Mark {
            gen: 8,
            ..at(0, Stage::Running)
        });
        assert!(p.skip(8, 1));
        assert!(child.skipped(8, 1) && !child.skipped(7, 5));
    }
}
