//! A Celery project as an app: its settings and tasks from what its Python
//! host described (`tasks::python::describe`), read through the settings
//! table, and the settings handed back to its hosts' `app.conf`.

use std::path::Path;

use serde_json::{Map, Value};

use super::settings::{self, SETTINGS};
use super::AppConfig;
use crate::tasks::python::{Description, PythonApp};
use crate::tasks::{Executor, TaskSpec};

impl AppConfig {
    /// The configuration of a Celery project, from what its Python host
    /// described; every task runs in the host. `-b`/`--result-backend`
    /// (`apply_flags`) and the `key=value` overrides are applied by the
    /// caller and reach the hosts through `python_conf`.
    pub fn from_python(name: &str, cwd: &Path, desc: &Description, python: &Path) -> AppConfig {
        let mut app = AppConfig::with_defaults(name, cwd);
        app.python = Some(PythonApp {
            module: name.to_string(),
            python: python.to_path_buf(),
            conf: Map::new(),
        });
        app.merge_python(desc, true);
        app
    }

    /// Adds the described tasks (those the app file does not define itself)
    /// and, when `settings` (a pure Python app), the described settings.
    pub fn merge_python(&mut self, desc: &Description, settings: bool) {
        if settings {
            for s in SETTINGS {
                let given = desc.settings.get(&s.path()).or(desc.settings.get(s.name));
                let value = given
                    .and_then(|v| s.kind.from_python(v))
                    .unwrap_or_else(|| s.initial(self));
                s.set(self, value);
            }
            // Celery's TLS dicts, which the URLs alone do not carry.
            if let Some(opts) = &desc.broker_use_ssl {
                self.broker_url = crate::broker::url::with_ssl_options(&self.broker_url, opts);
            }
            if let Some(opts) = &desc.redis_backend_use_ssl {
                self.result_backend =
                    crate::broker::url::with_ssl_options(&self.result_backend, opts);
            }
            self.fold_sentinel_options();
        }
        let limit = |v: Option<f64>| v.and_then(|v| settings::positive(v).ok());
        for (name, info) in &desc.tasks {
            if self.tasks.get(name).is_some() {
                continue;
            }
            self.tasks.insert(
                name.clone(),
                TaskSpec {
                    executor: Executor::Python,
                    acks_late: info.acks_late,
                    reject_on_worker_lost: info.reject_on_worker_lost,
                    time_limit: limit(info.time_limit),
                    soft_time_limit: limit(info.soft_time_limit),
                    ignore_result: info.ignore_result,
                },
            );
        }
    }

    /// The settings of `self` that differ from `before` (the app as Python
    /// described it), in Celery's names, for the hosts' `app.conf`: what
    /// `-b`, `--result-backend` and `-- key=value` changed.
    pub fn python_conf(&self, before: &AppConfig) -> Map<String, Value> {
        let mut conf = Map::new();
        for s in SETTINGS.iter().filter(|s| s.to_host) {
            let now = s.get(self);
            if now == s.get(before) {
                continue;
            }
            match s.section {
                // Nested as Celery keeps it (`broker_transport_options`).
                Some(section) => {
                    let table = conf
                        .entry(section)
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(table) = table {
                        table.insert(s.name.to_string(), now);
                    }
                }
                None => {
                    conf.insert(s.name.to_string(), now);
                }
            }
        }
        conf
    }
}
