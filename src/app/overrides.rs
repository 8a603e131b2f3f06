//! What overrides the app: the worker's flags (`-b`, `--result-backend`),
//! the environment (`CELERY_BROKER_URL`, ...: the table's `env` column) and
//! Celery's `-- name=value` settings after the worker's own arguments.

use serde_json::Value;

use super::settings::{self, Setting, SETTINGS};
use super::{AppConfig, AppError};

/// Values that override the file, strongest last: env, then flags.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-b/--broker`
    pub broker: Option<String>,
    /// `--result-backend`
    pub result_backend: Option<String>,
}

impl Overrides {
    /// The flag that sets setting `name`, if one was given: its spelling
    /// (for errors) and value.
    pub fn flag(&self, name: &str) -> Option<(&'static str, &str)> {
        match name {
            "broker_url" => self.broker.as_deref().map(|v| ("-b/--broker", v)),
            "result_backend" => self
                .result_backend
                .as_deref()
                .map(|v| ("--result-backend", v)),
            _ => None,
        }
    }
}

/// The environment's value for `setting`, if it names a variable. An empty
/// variable is "unset", as Celery treats a falsy value.
fn from_env(
    setting: &Setting,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    let var = setting.env?;
    env(var).filter(|v| !v.is_empty()).map(|v| (var, v))
}

impl AppConfig {
    /// Settles every setting from its sources, strongest first: the flags,
    /// the environment, `given` (the app file's, already checked), the
    /// table's start value.
    pub(super) fn settle(
        &mut self,
        given: &serde_json::Map<String, Value>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<(), AppError> {
        for s in SETTINGS {
            let outside = overrides
                .flag(s.name)
                .map(|(flag, v)| (flag, v.to_string()))
                .or_else(|| from_env(s, env));
            let value = match outside {
                Some((origin, text)) => s
                    .kind
                    .from_text(&text)
                    .map_err(|m| AppError::Invalid(format!("{origin} {m}")))?,
                None => match given.get(&s.path()) {
                    Some(v) => v.clone(),
                    None => s.initial(self),
                },
            };
            s.set(self, value);
        }
        self.fold_sentinel_options();
        Ok(())
    }

    /// Applies `-b` and `--result-backend` alone: a Celery app's own
    /// settings already include what the environment said.
    pub fn apply_flags(&mut self, overrides: &Overrides) -> Result<(), AppError> {
        for s in SETTINGS {
            if let Some((flag, text)) = overrides.flag(s.name) {
                let value = s
                    .kind
                    .from_text(text)
                    .map_err(|m| AppError::Invalid(format!("{flag} {m}")))?;
                s.set(self, value);
            }
        }
        self.fold_sentinel_options();
        Ok(())
    }

    /// Applies one `key=value` from the worker's command line (after `--`),
    /// e.g. `task_acks_late=true`. Optional settings take `none` to clear them.
    pub fn apply_override(&mut self, assignment: &str) -> Result<(), AppError> {
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(AppError::Invalid(format!(
                "override {assignment:?}: expected key=value"
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(setting) = settings::find(key).filter(|s| s.overridable) else {
            let names: Vec<&str> = SETTINGS
                .iter()
                .filter(|s| s.overridable)
                .map(|s| s.name)
                .collect();
            return Err(AppError::Invalid(format!(
                "override {assignment:?}: unknown setting {key:?}, expected one of {}",
                names.join(", ")
            )));
        };
        let parsed = setting
            .kind
            .from_text(value)
            .map_err(|m| AppError::Invalid(format!("override {key}={value}: {m}")))?;
        setting.set(self, parsed);
        self.fold_sentinel_options();
        Ok(())
    }
}
