//! The test's temp dir (the working directory of its `rmulti` processes) and
//! the app file written into it: broker and backend at the test's Redis, the
//! builtins under the seed's task names.

use std::fs;
use std::path::{Path, PathBuf};

use super::redis::RedisServer;

/// The contents of a log file, or "" when it does not exist (yet).
pub fn read_log(path: impl AsRef<Path>) -> String {
    fs::read(path.as_ref())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The `[tasks]` every test app has: the builtins under the seed's names.
pub const BUILTIN_TASKS: &str = r#""proj.tasks.add" = { builtin = "add" }
"proj.tasks.mul" = { builtin = "mul" }
"proj.tasks.xsum" = { builtin = "xsum" }
"proj.tasks.noop" = { builtin = "noop" }
"proj.tasks.sleep" = { builtin = "sleep" }
"proj.tasks.echo" = { builtin = "echo" }
"proj.tasks.fail" = { builtin = "fail" }
"#;

/// A temp dir that is the working directory of the test's `rmulti`
/// processes, tied to the test's Redis. Removed on drop (keep it with
/// `RMULTI_KEEP_TESTDIR=1` to look at the logs after a failure).
pub struct TestDir {
    dir: tempfile::TempDir,
    broker_url: String,
    backend_url: String,
}

impl TestDir {
    pub fn new(redis: &RedisServer) -> TestDir {
        let mut dir = tempfile::Builder::new()
            .prefix("rmulti-test-")
            .tempdir()
            .expect("create temp dir");
        if std::env::var_os("RMULTI_KEEP_TESTDIR").is_some() {
            dir.disable_cleanup(true);
            eprintln!("test dir kept: {}", dir.path().display());
        }
        TestDir {
            dir,
            broker_url: redis.broker_url(),
            backend_url: redis.backend_url(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path()/name`
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file relative to the dir, creating parent folders.
    pub fn write(&self, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Reads a file relative to the dir ("" when missing), e.g. `w1.log`.
    pub fn read(&self, name: impl AsRef<Path>) -> String {
        read_log(self.join(name))
    }

    /// Writes `<name>.toml`: broker and backend at the test's Redis, then
    /// `extra_toml` (settings and tables, e.g. `result_expires = 60`), then
    /// `[tasks]` with [`BUILTIN_TASKS`].
    pub fn write_app(&self, name: &str, extra_toml: &str) -> PathBuf {
        self.write_app_tasks(name, extra_toml, "")
    }

    /// As [`write_app`](Self::write_app), with `extra_tasks` lines added to
    /// `[tasks]` (e.g. `"proj.tasks.cat" = { exec = ["cat"] }`).
    pub fn write_app_tasks(&self, name: &str, extra_toml: &str, extra_tasks: &str) -> PathBuf {
        let text = format!(
            "# written by tests/common\nbroker_url = \"{}\"\nresult_backend = \"{}\"\n{extra_toml}\n\n[tasks]\n{BUILTIN_TASKS}{extra_tasks}\n",
            self.broker_url, self.backend_url
        );
        self.write(format!("{name}.toml"), text)
    }
}
