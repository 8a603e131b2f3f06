//! `-A NAME` resolution and the app's configuration: `NAME.toml` with
//! Celery's setting names, overridden by the environment and the command line.

use std::path::{Path, PathBuf};

use crate::tasks::Registry;

/// Values that override the file, strongest last: env, then flags.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-b/--broker`
    pub broker: Option<String>,
    /// `--result-backend`
    pub result_backend: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The `-A` value as given (`proj`), shown in the banner.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    pub broker_url: String,
    pub result_backend: String,
    /// Seconds; `None` stores results without expiry.
    pub result_expires: Option<u64>,
    pub task_default_queue: String,
    pub task_acks_late: bool,
    pub task_reject_on_worker_lost: bool,
    pub task_track_started: bool,
    pub task_time_limit: Option<f64>,
    pub task_soft_time_limit: Option<f64>,
    pub worker_concurrency: Option<usize>,
    /// `broker_transport_options.visibility_timeout`, seconds.
    pub visibility_timeout: u64,
    pub tasks: Registry,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("app file {0} not found (-A {1}: looked for {1}.toml in {2})")]
    NotFound(PathBuf, String, PathBuf),
    #[error("cannot read app file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

impl AppConfig {
    /// Resolves `-A app` against `cwd`: `app.toml`, or `app` itself when it
    /// ends in `.toml`. `env` supplies `CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND`.
    pub fn load(
        app: &str,
        cwd: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<AppConfig, AppError> {
        let _ = (app, cwd, env, overrides);
        Err(AppError::Invalid("not implemented".into()))
    }
}

impl AppConfig {
    /// Applies a `key=value` setting override (the worker's `-- key=value`).
    pub fn apply_override(&mut self, setting: &str) -> Result<(), AppError> {
        Err(AppError::Invalid(format!("unknown setting {setting:?}")))
    }
}
