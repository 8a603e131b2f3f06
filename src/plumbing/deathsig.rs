//! Dying with the parent: `PR_SET_PDEATHSIG(SIGKILL)`, and the check that
//! the parent did not die before it took effect (then no signal ever comes).

use std::io;

/// Makes this process get SIGKILL when its parent's forking *thread* ends,
/// and fails with `ESRCH` if `parent` is already gone (we were re-parented
/// before `prctl` ran). Only async-signal-safe calls (prctl, getppid), so it
/// may run between fork and exec (`Command::pre_exec`). Callers fork from a
/// thread that lives as long as the process: its main thread.
pub fn die_with_parent(parent: i32) -> io::Result<()> {
    // SAFETY: plain syscalls without pointers.
    let set = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}
