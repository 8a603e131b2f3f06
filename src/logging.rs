//! Per-process log files in Celery's record format
//! (`[2026-11-23 11:39:37,941: INFO/MainProcess] ...`).
//!
//! One global tracing subscriber is installed by the main process before it
//! forks; a pool child keeps it and only switches the file it writes to and
//! the process name it shows (`ForkPoolWorker-1`). Files are opened in append
//! mode so several processes may share one file (a `--logfile` without `%I`).
//!
//! Rotation (logrotate's `create` mode, like Celery's `WatchedFileHandler`):
//! before a write, at most once a second, each process compares its file's
//! inode with the one at its path and reopens the path when they differ.
//! Until then lines go to the renamed file, so none is lost. A path that is
//! missing on two checks in a row is created again. `SIGUSR2` to the node's
//! main process makes it reopen at once (see [`install_reopen_signal`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log level {0:?} (expected DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL)")]
    BadLevel(String),
    #[error("cannot open log file {0}: {1}")]
    Open(PathBuf, std::io::Error),
}

enum Target {
    Stderr,
    File(File),
}

struct State {
    target: Target,
    process: String,
    /// Where the file came from, when it can be reopened.
    watch: Option<Watch>,
}

/// A log file's path and the identity of the file we write to.
struct Watch {
    path: PathBuf,
    id: (u64, u64),
    next_check: Instant,
    missing_once: bool,
}

/// How often a process compares its log file with its path.
pub const ROTATION_CHECK: Duration = Duration::from_secs(1);

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// The path and (dev, inode) of the last file `open` opened, so
/// `set_target` knows where a file came from.
static LAST_OPENED: Mutex<Option<(PathBuf, (u64, u64))>> = Mutex::new(None);
/// Set by SIGUSR2 (see `install_reopen_signal`).
static REOPEN: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Celery's `-l` values (case-insensitive) as a filter.
pub fn parse_level(text: &str) -> Result<LevelFilter, LogError> {
    match text.to_ascii_uppercase().as_str() {
        "DEBUG" => Ok(LevelFilter::DEBUG),
        "INFO" => Ok(LevelFilter::INFO),
        "WARNING" | "WARN" => Ok(LevelFilter::WARN),
        "ERROR" | "CRITICAL" | "FATAL" => Ok(LevelFilter::ERROR),
        _ => Err(LogError::BadLevel(text.to_string())),
    }
}

/// Opens (creating) a log file in append mode, never through a symlink: a
/// link planted in a shared log directory must not make the node append to
/// a file of the link's choosing. `/dev/stdout` and `/dev/stderr` (links to
/// the process's own descriptors) are the one exception.
pub fn open(path: &Path) -> Result<File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| LogError::Open(path.to_path_buf(), e);
    if let Some(fd) = standard_stream(path) {
        return nix::unistd::dup(fd)
            .map(|fd| {
                // SAFETY: dup returned a new descriptor that nothing else owns.
                unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            })
            .map_err(|e| fail(e.into()));
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                fail(std::io::Error::other(
                    "it is a symbolic link, and log files are never opened through one (give the real path)",
                ))
            } else {
                fail(e)
            }
        })?;
    if let (Ok(meta), Ok(mut last)) = (file.metadata(), LAST_OPENED.lock()) {
        *last = Some((path.to_path_buf(), (meta.dev(), meta.ino())));
    }
    Ok(file)
}

/// Makes SIGUSR2 ask this process to reopen its log file before its next
/// write. Installed by the node main process; its pool children ignore
/// the signal (it could interrupt their Redis calls) and rely on the
/// inode check alone.
pub fn install_reopen_signal() -> std::io::Result<()> {
    let flag = REOPEN.get_or_init(|| Arc::new(AtomicBool::new(false)));
    signal_hook::flag::register(signal_hook::consts::SIGUSR2, flag.clone())?;
    Ok(())
}

/// Reopens the log file now if it was rotated or a reopen was asked for
/// (the main loop calls this so an idle process follows a rotation too).
pub fn maintain() {
    if let Ok(mut guard) = STATE.lock() {
        if let Some(state) = guard.as_mut() {
            state.follow_rotation(Instant::now());
        }
    }
}

impl State {
    /// The inode check (at most once per `ROTATION_CHECK`, or at once after
    /// SIGUSR2); a failed reopen keeps the current file and is retried.
    fn follow_rotation(&mut self, now: Instant) {
        let asked = REOPEN
            .get()
            .is_some_and(|f| f.swap(false, Ordering::SeqCst));
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        if !asked && now < watch.next_check {
            return;
        }
        watch.next_check = now + ROTATION_CHECK;
        let reopen = match std::fs::symlink_metadata(&watch.path) {
            Ok(meta) => {
                watch.missing_once = false;
                asked || (meta.dev(), meta.ino()) != watch.id
            }
            // Renamed away: logrotate creates the new file right after;
            // create it ourselves only if it is still missing a second later.
            Err(_) => {
                let again = watch.missing_once;
                watch.missing_once = true;
                asked || again
            }
        };
        if !reopen {
            return;
        }
        if let Ok(file) = open(&watch.path) {
            if let Ok(meta) = file.metadata() {
                watch.id = (meta.dev(), meta.ino());
                watch.missing_once = false;
                self.target = Target::File(file);
            }
        }
    }
}

fn standard_stream(path: &Path) -> Option<i32> {
    match path.to_str()? {
        "/dev/stdout" => Some(1),
        "/dev/stderr" => Some(2),
        _ => None,
    }
}

/// Installs the global subscriber. `file` None logs to stderr.
pub fn init(level: LevelFilter, file: Option<File>, process: &str) {
    set_target(file, process);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .event_format(CeleryFormat)
        .with_writer(SharedWriter)
        .finish();
    // A second init (tests, HUP) keeps the first subscriber; the target switch above still applies.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Switches this process's log target and name (after fork in a pool child).
/// A file that `open` opened is watched for rotation; `/dev/stdout`,
/// `/dev/stderr` and any other file are not.
pub fn set_target(file: Option<File>, process: &str) {
    let watch = file.as_ref().and_then(watch_of);
    let target = match file {
        Some(f) => Target::File(f),
        None => Target::Stderr,
    };
    if let Ok(mut state) = STATE.lock() {
        *state = Some(State {
            target,
            process: process.to_string(),
            watch,
        });
    }
}

fn watch_of(file: &File) -> Option<Watch> {
    let meta = file.metadata().ok()?;
    let id = (meta.dev(), meta.ino());
    let last = LAST_OPENED.lock().ok()?;
    let (path, opened) = last.as_ref()?;
    (meta.is_file() && *opened == id).then(|| Watch {
        path: path.clone(),
        id,
        next_check: Instant::now() + ROTATION_CHECK,
        missing_once: false,
    })
}

fn process_name() -> String {
    STATE
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|s| s.process.clone()))
        .unwrap_or_else(|| "MainProcess".to_string())
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// `[%(asctime)s: %(levelname)s/%(processName)s] %(message)s`, local time, ms.
struct CeleryFormat;

impl<S, N> FormatEvent<S, N> for CeleryFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now();
        write!(
            writer,
            "[{}: {}/{}] ",
            now.format("%Y-%m-%d %H:%M:%S,%3f"),
            level_name(event.metadata().level()),
            process_name()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

struct SharedWriter;

struct LineWriter;

impl<'a> MakeWriter<'a> for SharedWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One write_all per record keeps lines whole in a shared O_APPEND file.
        let mut guard = STATE
            .lock()
            .map_err(|_| std::io::Error::other("log state poisoned"))?;
        if let Some(state) = guard.as_mut() {
            state.follow_rotation(Instant::now());
        }
        match guard.as_mut().map(|s| &mut s.target) {
            Some(Target::File(f)) => f.write_all(buf)?,
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_like_celery() {
        assert_eq!(parse_level("info").unwrap(), LevelFilter::INFO);
        assert_eq!(parse_level("WARNING").unwrap(), LevelFilter::WARN);
        assert!(parse_level("chatty").is_err());
    }

    #[test]
    fn a_renamed_file_is_followed_and_no_line_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        let file = open(&path).unwrap();
        let mut state = State {
            target: Target::File(file),
            process: "MainProcess".into(),
            watch: None,
        };
        state.watch = {
            let f = match &state.target {
                Target::File(f) => f,
                Target::Stderr => unreachable!(),
            };
            watch_of(f)
        };
        assert!(state.watch.is_some());
        let write = |state: &mut State, line: &str| match &mut state.target {
            Target::File(f) => f.write_all(line.as_bytes()).unwrap(),
            Target::Stderr => unreachable!(),
        };
        write(&mut state, "one\n");
        std::fs::rename(&path, dir.path().join("n.log.1")).unwrap();
        write(&mut state, "two\n");
        std::fs::write(&path, "").unwrap();
        let later = Instant::now() + ROTATION_CHECK * 2;
        state.follow_rotation(later);
        write(&mut state, "three\n");
        let old = std::fs::read_to_string(dir.path().join("n.log.1")).unwrap();
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        // Moved away and never re-created: created again on the second check.
        std::fs::rename(&path, dir.path().join("n.log.2")).unwrap();
        state.follow_rotation(later + ROTATION_CHECK * 2);
        assert!(!path.exists());
        state.follow_rotation(later + ROTATION_CHECK * 4);
        write(&mut state, "four\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "four\n");
    }
}
