//! Per-process log files in Celery's record format
//! (`[2026-11-23 11:39:37,941: INFO/MainProcess] ...`).
//!
//! One global tracing subscriber is installed by the main process before it
//! forks; a pool child keeps it and only switches the file it writes to and
//! the process name it shows (`ForkPoolWorker-1`). Files are opened in append
//! mode so several processes may share one file (a `--logfile` without `%I`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

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
    OpenOptions::new()
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
        })
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
pub fn set_target(file: Option<File>, process: &str) {
    let target = match file {
        Some(f) => Target::File(f),
        None => Target::Stderr,
    };
    if let Ok(mut state) = STATE.lock() {
        *state = Some(State {
            target,
            process: process.to_string(),
        });
    }
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
}
