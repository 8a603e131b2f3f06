//! The node's pidfile: `<pid>\n` of the main process, created atomically
//! (temp file + `link`, which never follows a symlink at the target), with
//! Celery's start-up check: a live rmulti worker holding it fails the start
//! (exit 73); a stale, broken or foreign one is replaced with a warning.
//! Removed at exit only while it still holds our pid.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("ERROR: Pidfile ({path}) already exists.\nSeems we're already running? (pid: {pid})")]
    AlreadyRunning { path: PathBuf, pid: i32 },
    #[error("cannot create pidfile {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("pidfile {0} keeps changing under us; another node is starting with the same pidfile")]
    Contended(PathBuf),
}

/// What an existing pidfile holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Pid(i32),
    /// Not `<int>\n`, or 0 / negative.
    Broken,
    Symlink,
    Missing,
}

/// Reads a pidfile without following a symlink.
pub fn read(path: &Path) -> Content {
    match fs::symlink_metadata(path) {
        Err(_) => return Content::Missing,
        Ok(m) if m.file_type().is_symlink() => return Content::Symlink,
        Ok(_) => {}
    }
    let mut text = String::new();
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match opened.and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) => parse(&text),
        Err(_) => Content::Missing,
    }
}

fn parse(text: &str) -> Content {
    match super::identity::parse_pidfile(text.as_bytes()) {
        super::identity::PidfileState::Pid(pid) => Content::Pid(pid),
        _ => Content::Broken,
    }
}

/// The pidfile of this process, removed on drop if it still holds our pid.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: i32,
}

impl Pidfile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the pidfile for the current process. `is_live_node(pid)` says
    /// whether a pid belongs to a running rmulti worker. Warnings about
    /// replaced files are returned for the caller to print and log.
    pub fn acquire(
        path: &Path,
        is_live_node: &dyn Fn(i32) -> bool,
    ) -> Result<(Pidfile, Vec<String>), PidfileError> {
        let path = absolute(path);
        let pid = std::process::id() as i32;
        let mut warnings = Vec::new();
        let tmp = temp_path(&path, pid);
        for _ in 0..5 {
            write_temp(&tmp, pid).map_err(|e| PidfileError::Create(path.clone(), e))?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if read(&path) != Content::Pid(pid) {
                        return Err(PidfileError::Create(
                            path.clone(),
                            std::io::Error::other(
                                "Inconsistency: Pidfile content doesn't match at re-read",
                            ),
                        ));
                    }
                    return Ok((Pidfile { path, pid }, warnings));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(PidfileError::Create(path.clone(), e)),
            }
            let existing = read(&path);
            match &existing {
                Content::Missing => continue,
                Content::Symlink => {
                    warnings.push("Pidfile is a symbolic link - Removing it.".to_string())
                }
                Content::Broken => warnings.push("Broken pidfile found - Removing it.".to_string()),
                Content::Pid(p) if *p == pid => {}
                Content::Pid(p) if is_live_node(*p) => {
                    return Err(PidfileError::AlreadyRunning {
                        path: path.clone(),
                        pid: *p,
                    });
                }
                Content::Pid(_) => warnings.push("Stale pidfile exists - Removing it.".to_string()),
            }
            // Remove only what we judged; a file replaced meanwhile is looked at again.
            if read(&path) == existing {
                let _ = fs::remove_file(&path);
            }
        }
        Err(PidfileError::Contended(path))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // A forked child never owns the pidfile, even if it unwinds through our frame.
        if std::process::id() as i32 == self.pid && read(&self.path) == Content::Pid(self.pid) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

fn temp_path(path: &Path, pid: i32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{pid}.tmp"))
}

fn write_temp(tmp: &Path, pid: i32) -> std::io::Result<()> {
    let _ = fs::remove_file(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    f.write_all(format!("{pid}\n").as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_positive_int_newline() {
        assert_eq!(parse("123\n"), Content::Pid(123));
        assert_eq!(parse("123"), Content::Broken);
        assert_eq!(parse("0\n"), Content::Broken);
        assert_eq!(parse("-5\n"), Content::Broken);
        assert_eq!(parse("abc\n"), Content::Broken);
        assert_eq!(parse("\n"), Content::Broken);
    }

    #[test]
    fn acquire_replaces_stale_and_refuses_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w1.pid");
        fs::write(&path, "999999\n").unwrap();
        let (pf, warnings) = Pidfile::acquire(&path, &|_| false).unwrap();
        assert_eq!(
            warnings,
            vec!["Stale pidfile exists - Removing it.".to_string()]
        );
        assert_eq!(read(&path), Content::Pid(std::process::id() as i32));
        drop(pf);
        assert_eq!(read(&path), Content::Missing);

        fs::write(&path, "4242\n").unwrap();
        let err = Pidfile::acquire(&path, &|p| p == 4242).unwrap_err();
        assert!(matches!(
            err,
            PidfileError::AlreadyRunning { pid: 4242, .. }
        ));
        assert_eq!(read(&path), Content::Pid(4242));
    }

    #[test]
    fn symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, "precious").unwrap();
        let path = dir.path().join("w1.pid");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let (_pf, warnings) = Pidfile::acquire(&path, &|_| false).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(read(&path), Content::Pid(std::process::id() as i32));
    }
}
