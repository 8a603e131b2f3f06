//! Pipes between our processes: created close-on-exec, read without
//! blocking, waited on with `poll(2)`.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A pipe (read end, write end) whose ends close on exec: a spawned program
/// gets only the ends handed to it on purpose, so end of file means what it
/// says (a launcher's daemon, an exec task, a Python host never keep a stray
/// copy of a write end).
pub fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Makes reads (and writes) on `fd` return `WouldBlock` instead of waiting.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Reads what is available now from a non-blocking reader into `into`;
/// `Ok(true)` at end of file, `Ok(false)` when the rest is not there yet.
pub fn drain(reader: &mut impl Read, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits until one of `fds` is readable (or hung up), `timeout` passes
/// (`None`: no limit), or a signal arrives; returns how many are ready (0
/// after a timeout or a signal: the caller looks again).
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let timeout = match timeout {
        // Rounded up, so a wait for 0.5 ms does not spin at 0 ms.
        Some(t) => {
            let ms = t.as_micros().div_ceil(1000);
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
        None => PollTimeout::NONE,
    };
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    match poll(&mut polled, timeout) {
        Ok(n) => Ok(n.max(0) as usize),
        Err(Errno::EINTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn drain_reads_what_is_there_then_end_of_file() {
        let (read, write) = cloexec_pipe().unwrap();
        set_nonblocking(&read).unwrap();
        let mut reader = std::fs::File::from(read);
        let mut writer = std::fs::File::from(write);
        let mut got = Vec::new();
        assert!(!drain(&mut reader, &mut got).unwrap());
        assert!(got.is_empty());
        assert_eq!(
            wait_readable(&[reader.as_fd()], Some(Duration::from_millis(1))).unwrap(),
            0
        );
        writer.write_all(b"abc").unwrap();
        assert_eq!(wait_readable(&[reader.as_fd()], None).unwrap(), 1);
        assert!(!drain(&mut reader, &mut got).unwrap());
        drop(writer);
        // Another test's fork may hold a copy of the write end until its
        // exec closes it: end of file comes then, so wait for it.
        assert_eq!(
            wait_readable(&[reader.as_fd()], Some(Duration::from_secs(5))).unwrap(),
            1
        );
        assert!(drain(&mut reader, &mut got).unwrap());
        assert_eq!(got, b"abc");
    }
}
