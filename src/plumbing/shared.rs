//! Words of memory shared across `fork`: an anonymous `MAP_SHARED` mapping
//! made before the fork, so parent and children see the same words. Only
//! ever touched through atomics; no file, no syscall per access.

use std::sync::atomic::AtomicU64;

/// The mapping; unmapped when dropped. A forked child keeps its copy of
/// the mapping for life (it never drops the owner, it `_exit`s).
pub struct SharedWords {
    words: *mut AtomicU64,
    len: usize,
}

// The pointer is only ever used through atomics.
unsafe impl Send for SharedWords {}

impl SharedWords {
    /// Maps `len` zeroed words; to be made before the fork.
    pub fn new(len: usize) -> std::io::Result<SharedWords> {
        let bytes = len.max(1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: an anonymous shared mapping of our own, zero-filled; no
        // file, no address hint. Checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedWords {
            words: ptr.cast::<AtomicU64>(),
            len: len.max(1),
        })
    }

    /// Word `i` (< the length mapped).
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "shared word {i} of {}", self.len);
        // SAFETY: `words` points at `len` mapped, page-aligned u64s, mapped
        // for as long as self lives.
        unsafe { &*self.words.add(i) }
    }

    /// A copyable view for the child forked after this call.
    pub fn view(&self) -> SharedView {
        SharedView {
            words: self.words,
            len: self.len,
        }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once.
        unsafe {
            libc::munmap(
                self.words.cast(),
                self.len * std::mem::size_of::<AtomicU64>(),
            );
        }
    }
}

impl std::fmt::Debug for SharedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedWords({})", self.len)
    }
}

/// A borrowed view of the words: valid while the owner's mapping lives,
/// which in a forked child is for life.
#[derive(Debug, Clone, Copy)]
pub struct SharedView {
    words: *mut AtomicU64,
    len: usize,
}

unsafe impl Send for SharedView {}
unsafe impl Sync for SharedView {}

impl SharedView {
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "shared word {i} of {}", self.len);
        // SAFETY: `words` points at `len` mapped, page-aligned u64s, and
        // the mapping outlives every view used (see the type's doc).
        unsafe { &*self.words.add(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_forked_child_writes_what_the_parent_reads() {
        let page = SharedWords::new(2).expect("mmap");
        let view = page.view();
        // SAFETY: the child only stores to the shared word and `_exit`s.
        match unsafe { libc::fork() } {
            0 => {
                view.word(1).store(42, Ordering::Release);
                unsafe { libc::_exit(0) };
            }
            pid if pid > 0 => {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert_eq!(page.word(1).load(Ordering::Acquire), 42);
                assert_eq!(page.word(0).load(Ordering::Acquire), 0);
            }
            _ => panic!("fork failed"),
        }
    }
}
