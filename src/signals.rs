//! Process signal plumbing shared by the node main process and pool children.
//! Handlers only record the signal and wake the loop (self-pipe).
//! The supervisor loop handles them by name; nothing else runs in a handler.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

const NSIG: usize = 65;
static PENDING: [AtomicU32; NSIG] = [const { AtomicU32::new(0) }; NSIG];
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn record(sig: libc::c_int) {
    if let Some(slot) = PENDING.get(sig as usize) {
        slot.fetch_add(1, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just means the loop is already awake.
        unsafe {
            libc::write(fd, &byte as *const u8 as *const libc::c_void, 1);
        }
    }
}

/// The read end of the self-pipe, to poll on.
pub struct SelfPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl std::os::fd::AsFd for SelfPipe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl SelfPipe {
    /// Empties the pipe after a wake-up.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }
}

/// Installs `record` for `signals` and returns the self-pipe they wake.
pub fn install(signals: &[Signal]) -> nix::Result<SelfPipe> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(record),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in signals {
        // SAFETY: the handler only touches atomics and write(2).
        unsafe { signal::sigaction(*sig, &action)? };
    }
    Ok(SelfPipe {
        read,
        _write: write,
    })
}

/// Takes (and clears) how many times `sig` arrived since the last call.
pub fn take(sig: Signal) -> u32 {
    PENDING[sig as usize].swap(0, Ordering::SeqCst)
}

/// Installs `record` without a wake pipe (a pool child reads `peek`).
pub fn install_flags(signals: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(record),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in signals {
        // SAFETY: the handler only touches atomics (the wake fd is -1 here).
        unsafe { signal::sigaction(*sig, &action)? };
    }
    Ok(())
}

/// Restores default dispositions (in a freshly forked child) and forgets the
/// parent's self-pipe, so the child's signals never wake the parent.
pub fn reset_in_child(signals: &[Signal]) {
    WAKE_FD.store(-1, Ordering::SeqCst);
    for p in PENDING.iter() {
        p.store(0, Ordering::SeqCst);
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in signals {
        // SAFETY: restoring the default disposition.
        unsafe {
            let _ = signal::sigaction(*sig, &default);
        }
    }
}

/// Blocks `sig` in this process: it stays pending instead of interrupting a
/// system call (socket calls with timeouts are never restarted, whatever
/// SA_RESTART says), and `is_pending` reads it at a safe point. A spawned
/// program starts with an empty mask (std's `Command` resets it).
pub fn block(sig: Signal) -> nix::Result<()> {
    let mut set = SigSet::empty();
    set.add(sig);
    set.thread_block()
}

/// Unblocks `sig` (see `block`).
pub fn unblock(sig: Signal) -> nix::Result<()> {
    let mut set = SigSet::empty();
    set.add(sig);
    set.thread_unblock()
}

/// Whether a blocked `sig` has arrived.
pub fn is_pending(sig: Signal) -> bool {
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigpending fills the set we own; sigismember only reads it.
    unsafe {
        libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, sig as libc::c_int) == 1
    }
}

/// Ignores `sig` (SIGPIPE: a closed pipe is an error return, not a death).
pub fn ignore(sig: Signal) {
    // SAFETY: setting SIG_IGN.
    unsafe {
        let _ = signal::signal(sig, SigHandler::SigIgn);
    }
}

/// How many times `sig` arrived, without clearing.
pub fn peek(sig: Signal) -> u32 {
    PENDING[sig as usize].load(Ordering::SeqCst)
}

/// While alive, `signals` are blocked in this thread: one that arrives stays
/// pending and its handler runs when the guard drops. For work that a
/// handler must not interrupt: a socket call with a timeout (every Redis
/// call) fails with EINTR after a handler, SA_RESTART or not.
#[must_use = "the signals are held only while the guard lives"]
pub struct Held {
    old: SigSet,
}

/// Holds `signals` back until the returned guard drops (see `Held`).
pub fn hold(signals: &[Signal]) -> nix::Result<Held> {
    let set: SigSet = signals.iter().copied().collect();
    let old = set.thread_swap_mask(signal::SigmaskHow::SIG_BLOCK)?;
    Ok(Held { old })
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.old.thread_set_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// Reads one byte from a socket with a read timeout while another thread
    /// sends this thread SIGUSR2 (handled by `record`, SA_RESTART) and then
    /// writes the byte.
    fn read_while_signalled(held: bool) -> std::io::Result<usize> {
        let action = SigAction::new(
            SigHandler::Handler(record),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only touches atomics (no wake fd in tests).
        unsafe { signal::sigaction(Signal::SIGUSR2, &action).unwrap() };
        let (mut reader, writer) = UnixStream::pair().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let guard = held.then(|| hold(&[Signal::SIGUSR2]).unwrap());
        let poke = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: `me` is alive: it joins this thread before returning.
            assert_eq!(unsafe { libc::pthread_kill(me, libc::SIGUSR2) }, 0);
            std::thread::sleep(Duration::from_millis(200));
            std::io::Write::write_all(&mut &writer, b"x").unwrap();
        });
        let got = reader.read(&mut [0u8; 1]);
        drop(guard);
        poke.join().unwrap();
        got
    }

    #[test]
    fn a_held_signal_does_not_interrupt_a_socket_read_with_a_timeout() {
        // Unheld, the handler makes the read fail although SA_RESTART is set:
        // what broke the main process's Redis calls when children died.
        let err = read_while_signalled(false).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
        let before = peek(Signal::SIGUSR2);
        assert_eq!(read_while_signalled(true).unwrap(), 1);
        // Delivered once the guard dropped.
        assert_eq!(peek(Signal::SIGUSR2), before + 1);
    }
}
