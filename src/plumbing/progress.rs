//! A pool child's progress through a batch, in memory shared with the main
//! process: an anonymous `MAP_SHARED` page mapped before the fork, so the
//! child can say which task of its batch it runs with one store, and the
//! main process can read it when the child dies (which of the batch's
//! messages started) or when asked what runs (`inspect active`, USR1).
//! No pipe write, no syscall per task.

use std::sync::atomic::{AtomicU64, Ordering};

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
pub struct Progress {
    words: *mut AtomicU64,
}

// The pointer is only ever used through atomics.
unsafe impl Send for Progress {}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Progress({:?})", self.read())
    }
}

const LEN: usize = 2 * std::mem::size_of::<AtomicU64>();

impl Progress {
    /// Maps a fresh progress page; to be made before the fork.
    pub fn new() -> std::io::Result<Progress> {
        // SAFETY: an anonymous shared mapping of our own, zero-filled; no
        // file, no address hint. Checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Progress {
            words: ptr.cast::<AtomicU64>(),
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: `words` points at LEN bytes mapped for as long as self
        // lives, page-aligned, so both u64s are valid and aligned.
        unsafe { &*self.words.add(i) }
    }

    /// The child's store: the time first, so a reader that sees `Running`
    /// sees its start.
    pub fn set(&self, mark: Mark) {
        self.word(1).store(mark.since_ms, Ordering::Relaxed);
        self.word(0).store(mark.word(), Ordering::Release);
    }

    pub fn read(&self) -> Mark {
        let word = self.word(0).load(Ordering::Acquire);
        let since = self.word(1).load(Ordering::Relaxed);
        Mark::from_words(word, since)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once.
        unsafe {
            libc::munmap(self.words.cast(), LEN);
        }
    }
}

/// A child's borrowed view of its progress page (the main process owns it).
#[derive(Debug, Clone, Copy)]
pub struct ProgressHandle {
    words: *mut AtomicU64,
}

unsafe impl Send for ProgressHandle {}
unsafe impl Sync for ProgressHandle {}

impl ProgressHandle {
    fn as_progress(&self) -> std::mem::ManuallyDrop<Progress> {
        // Never dropped: the page is the owner's to unmap.
        std::mem::ManuallyDrop::new(Progress { words: self.words })
    }

    pub fn set(&self, mark: Mark) {
        self.as_progress().set(mark);
    }

    pub fn read(&self) -> Mark {
        self.as_progress().read()
    }
}

impl Progress {
    /// A handle for the child forked after this call.
    pub fn handle(&self) -> ProgressHandle {
        ProgressHandle { words: self.words }
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
}
