//! The one table of app settings. Each row says what a setting is called
//! (Celery's name), what it holds, where it starts and who may change it;
//! the app file (`file.rs`), a Celery app's description (`python.rs`), the
//! environment and the command line (`overrides.rs`), the hosts' `app.conf`
//! and the banner all read this table instead of naming settings one by one.
//!
//! Adding a setting is one row here plus its field in `AppConfig`.

use serde::Deserialize;
use serde_json::Value;

use super::AppConfig;

/// Every setting, in the order they are resolved (a setting whose start
/// follows another comes after it).
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "broker_url",
        kind: Kind::Url,
        initial: Initial::Is("redis://localhost:6379/0"),
        env: Some("CELERY_BROKER_URL"),
        banner: Some("transport"),
        ..Setting::TOP
    }
    .field(|a| &a.broker_url, |a| &mut a.broker_url),
    Setting {
        name: "result_backend",
        kind: Kind::Url,
        // Celery stores results next to the broker unless told otherwise.
        initial: Initial::SameAs("broker_url"),
        env: Some("CELERY_RESULT_BACKEND"),
        banner: Some("results"),
        ..Setting::TOP
    }
    .field(|a| &a.result_backend, |a| &mut a.result_backend),
    Setting {
        name: "result_expires",
        kind: Kind::Expires,
        initial: Initial::Is("86400"),
        ..Setting::TOP
    }
    .field(|a| &a.result_expires, |a| &mut a.result_expires),
    Setting {
        name: "task_default_queue",
        kind: Kind::Name,
        initial: Initial::Is("celery"),
        ..Setting::TOP
    }
    .field(|a| &a.task_default_queue, |a| &mut a.task_default_queue),
    Setting {
        name: "task_acks_late",
        ..Setting::FLAG
    }
    .field(|a| &a.task_acks_late, |a| &mut a.task_acks_late),
    Setting {
        name: "task_reject_on_worker_lost",
        ..Setting::FLAG
    }
    .field(
        |a| &a.task_reject_on_worker_lost,
        |a| &mut a.task_reject_on_worker_lost,
    ),
    Setting {
        name: "task_track_started",
        ..Setting::FLAG
    }
    .field(|a| &a.task_track_started, |a| &mut a.task_track_started),
    Setting {
        // `-E` in the app: the node's children send task events.
        name: "worker_send_task_events",
        ..Setting::FLAG
    }
    .field(
        |a| &a.worker_send_task_events,
        |a| &mut a.worker_send_task_events,
    ),
    Setting {
        name: "task_time_limit",
        kind: Kind::Limit,
        ..Setting::TOP
    }
    .field(|a| &a.task_time_limit, |a| &mut a.task_time_limit),
    Setting {
        name: "task_soft_time_limit",
        kind: Kind::Limit,
        ..Setting::TOP
    }
    .field(|a| &a.task_soft_time_limit, |a| &mut a.task_soft_time_limit),
    Setting {
        name: "worker_concurrency",
        kind: Kind::Count,
        // The hosts run one task at a time whatever the pool's size.
        to_host: false,
        ..Setting::TOP
    }
    .field(|a| &a.worker_concurrency, |a| &mut a.worker_concurrency),
    Setting {
        name: "visibility_timeout",
        section: Some("broker_transport_options"),
        kind: Kind::Seconds,
        initial: Initial::Is("3600"),
        // Only the nodes' own Redis work reads it.
        to_host: false,
        ..Setting::TOP
    }
    .field(|a| &a.visibility_timeout, |a| &mut a.visibility_timeout),
    // rmulti's own: after each finish (result stored, message acked), `WAIT`
    // until this many replicas have the writes (at most 1 s), so a Sentinel
    // failover cannot forget a finished task's outcome. None: no WAIT.
    Setting {
        name: "wait_replicas",
        section: Some("broker_transport_options"),
        kind: Kind::Count,
        to_host: false,
        ..Setting::TOP
    }
    .field(|a| &a.wait_replicas, |a| &mut a.wait_replicas),
    // Redis Sentinel (kombu's `sentinel://`): folded into the URLs' query
    // once settled (`AppConfig::fold_sentinel_options`). Not after `--`
    // (Celery's command line has no tables) and not handed to the hosts,
    // whose Celery reads its own transport options.
    Setting {
        name: "master_name",
        section: Some("broker_transport_options"),
        ..Setting::SENTINEL
    }
    .field(|a| &a.broker_master_name, |a| &mut a.broker_master_name),
    Setting {
        name: "sentinel_kwargs",
        section: Some("broker_transport_options"),
        kind: Kind::Strings,
        ..Setting::SENTINEL
    }
    .field(
        |a| &a.broker_sentinel_kwargs,
        |a| &mut a.broker_sentinel_kwargs,
    ),
    Setting {
        name: "master_name",
        section: Some("result_backend_transport_options"),
        ..Setting::SENTINEL
    }
    .field(|a| &a.backend_master_name, |a| &mut a.backend_master_name),
    Setting {
        name: "sentinel_kwargs",
        section: Some("result_backend_transport_options"),
        kind: Kind::Strings,
        ..Setting::SENTINEL
    }
    .field(
        |a| &a.backend_sentinel_kwargs,
        |a| &mut a.backend_sentinel_kwargs,
    ),
];

/// One setting.
pub struct Setting {
    /// Celery's name: the app file's key (inside `section`), the key after
    /// `--`, the key of a Celery app's description and of the hosts' `app.conf`.
    pub name: &'static str,
    /// The table Celery keeps it in (`broker_transport_options`), if any:
    /// `[section] name = ...` in the app file, `section.name=...` or
    /// `name=...` after `--`.
    pub section: Option<&'static str>,
    pub kind: Kind,
    /// Its value before any source sets it.
    pub initial: Initial,
    /// The environment variable Celery reads it from, weaker than the flags
    /// and stronger than the app file.
    pub env: Option<&'static str>,
    /// Accepted after `--` on the worker's command line.
    pub overridable: bool,
    /// Handed to a Python app's hosts (`app.conf`) when `-b` or `--` changed it.
    pub to_host: bool,
    /// Its line in the start-up banner (`.> transport:`); URLs are masked.
    pub banner: Option<&'static str>,
    field: Field,
}

/// What a setting holds; decides how each source's value becomes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Redis URL, non-empty (`broker::url` checks the rest once resolved).
    Url,
    /// A non-empty name (a queue).
    Name,
    /// True or false.
    Flag,
    /// An optional positive number of seconds (time limits).
    Limit,
    /// Seconds rounded up; 0 or none means results never expire.
    Expires,
    /// A positive number of seconds rounded up to whole seconds.
    Seconds,
    /// An optional count of at least 1.
    Count,
    /// An optional non-empty text (a Sentinel master's name).
    Text,
    /// A table of texts (`sentinel_kwargs`); `none` is an empty one.
    Strings,
}

/// Where a setting starts.
#[derive(Debug, Clone, Copy)]
pub enum Initial {
    /// This value, written as after `--` (`none` for unset).
    Is(&'static str),
    /// Whatever that (earlier) setting resolved to.
    SameAs(&'static str),
}

/// How a row reaches its field of `AppConfig`.
#[derive(Clone, Copy)]
struct Field {
    get: fn(&AppConfig) -> &dyn Slot,
    set: fn(&mut AppConfig) -> &mut dyn Slot,
}

/// A value refused by a source: its type (the TOML parser's own words) or
/// the setting's check (said after the setting's name).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    Type(String),
    Check(String),
}

impl Setting {
    /// The common case: a top-level, overridable setting handed to the hosts.
    const TOP: Setting = Setting {
        name: "",
        section: None,
        kind: Kind::Flag,
        initial: Initial::Is("none"),
        env: None,
        overridable: true,
        to_host: true,
        banner: None,
        field: Field {
            get: |a| &a.task_acks_late,
            set: |a| &mut a.task_acks_late,
        },
    };
    const FLAG: Setting = Setting {
        kind: Kind::Flag,
        initial: Initial::Is("false"),
        ..Setting::TOP
    };
    /// A Sentinel transport option: unset at start, app file and Python only.
    const SENTINEL: Setting = Setting {
        kind: Kind::Text,
        overridable: false,
        to_host: false,
        ..Setting::TOP
    };

    const fn field(
        mut self,
        get: fn(&AppConfig) -> &dyn Slot,
        set: fn(&mut AppConfig) -> &mut dyn Slot,
    ) -> Setting {
        self.field = Field { get, set };
        self
    }

    /// `section.name`, or `name` at the top level.
    pub fn path(&self) -> String {
        match self.section {
            Some(section) => format!("{section}.{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// The value in `app`, as JSON (the hosts' `app.conf`).
    pub fn get(&self, app: &AppConfig) -> Value {
        (self.field.get)(app).get()
    }

    /// Stores `value`, which this row's `kind` produced.
    pub fn set(&self, app: &mut AppConfig, value: Value) {
        (self.field.set)(app).set(value);
    }

    /// The value it starts with, given the settings resolved before it.
    pub fn initial(&self, app: &AppConfig) -> Value {
        match self.initial {
            // The table's own text; `settings_start_valid` checks every one.
            Initial::Is(text) => self.kind.from_text(text).unwrap_or(Value::Null),
            Initial::SameAs(other) => find(other).map_or(Value::Null, |s| s.get(app)),
        }
    }
}

/// The row named `name` (or `section.name`; a name two tables share finds
/// the first row).
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.name == name || (s.section.is_some() && s.path() == name))
}

/// The names a Celery app's description reports (`tasks::python::describe`):
/// every setting, dotted inside its table.
pub fn host_names() -> Vec<String> {
    SETTINGS.iter().map(Setting::path).collect()
}

impl Kind {
    /// A value written as text: after `--`, in the environment, a flag, or
    /// the table's own start values.
    pub fn from_text(self, text: &str) -> Result<Value, String> {
        let text = text.trim();
        let none = matches!(text.to_ascii_lowercase().as_str(), "none" | "null" | "");
        let number = || {
            text.parse::<f64>()
                .map_err(|_| "expected a number".to_string())
        };
        match self {
            Kind::Url | Kind::Name => {
                if text.is_empty() {
                    return Err("must not be empty".to_string());
                }
                Ok(text.into())
            }
            Kind::Flag => parse_bool(text)
                .map(Value::from)
                .ok_or_else(|| "expected true or false".to_string()),
            Kind::Limit | Kind::Expires | Kind::Count | Kind::Text if none => Ok(Value::Null),
            Kind::Strings if none => Ok(Value::Object(serde_json::Map::new())),
            Kind::Text => Ok(text.into()),
            Kind::Strings => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(table)) => Ok(strings(&table).into()),
                _ => Err("expected a JSON object".to_string()),
            },
            Kind::Limit => positive(number()?).map(Value::from),
            Kind::Expires => expires(number()?).map(Value::from),
            Kind::Seconds => seconds(number()?).map(Value::from),
            Kind::Count => {
                let n = text
                    .parse::<i64>()
                    .map_err(|_| "expected an integer".to_string())?;
                concurrency(n).map(Value::from)
            }
        }
    }

    /// A value of the app file, typed as TOML.
    pub fn from_toml(self, value: toml::Value) -> Result<Value, Refusal> {
        let typed = |e: toml::de::Error| Refusal::Type(e.message().trim_end().to_string());
        let checked = |r: Result<Value, String>| r.map_err(Refusal::Check);
        match self {
            Kind::Url | Kind::Name => {
                let text = String::deserialize(value).map_err(typed)?;
                checked(non_empty(text).map(Value::from))
            }
            Kind::Flag => bool::deserialize(value).map(Value::from).map_err(typed),
            Kind::Limit | Kind::Expires | Kind::Seconds => {
                let v = f64::deserialize(value).map_err(typed)?;
                checked(match self {
                    Kind::Limit => positive(v).map(Value::from),
                    Kind::Expires => expires(v).map(Value::from),
                    _ => seconds(v).map(Value::from),
                })
            }
            Kind::Count => {
                let n = i64::deserialize(value).map_err(typed)?;
                checked(concurrency(n).map(Value::from))
            }
            Kind::Text => {
                let text = String::deserialize(value).map_err(typed)?;
                checked(non_empty(text).map(Value::from))
            }
            Kind::Strings => {
                let table = std::collections::BTreeMap::<String, String>::deserialize(value)
                    .map_err(typed)?;
                Ok(serde_json::to_value(table).unwrap_or(Value::Null))
            }
        }
    }

    /// A value a Celery app's description gave (`null` when Celery's is
    /// `None`). `None` means "not usable here": the setting keeps its start,
    /// as a Celery worker would ignore what it cannot use.
    pub fn from_python(self, value: &Value) -> Option<Value> {
        match self {
            Kind::Url | Kind::Name => value
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .map(Value::from),
            Kind::Flag => Some(truthy(value).into()),
            Kind::Limit => Some(value.as_f64().and_then(|v| positive(v).ok()).into()),
            // Celery's `result_expires = None` keeps results for ever.
            Kind::Expires if value.is_null() => Some(Value::Null),
            Kind::Expires => value
                .as_f64()
                .and_then(|v| expires(v).ok())
                .map(Value::from),
            Kind::Seconds => value
                .as_f64()
                .and_then(|v| seconds(v).ok())
                .map(Value::from),
            Kind::Count => Some(value.as_u64().filter(|n| *n > 0).into()),
            Kind::Text => Some(
                value
                    .as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(Value::from)
                    .into(),
            ),
            Kind::Strings => Some(value.as_object().map(strings).unwrap_or_default().into()),
        }
    }
}

/// A table's plain values as texts (Python's `str()` of each); `None`s and
/// nested values are left out.
fn strings(table: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    table
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(true) => "True".to_string(),
                Value::Bool(false) => "False".to_string(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k.clone(), Value::from(text)))
        })
        .collect()
}

/// Python's truth value of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|v| v != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A field of `AppConfig` seen through JSON, so one table row can point at
/// fields of different types.
pub trait Slot {
    fn get(&self) -> Value;
    fn set(&mut self, value: Value);
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Slot for T {
    fn get(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn set(&mut self, value: Value) {
        // A row's kind makes values of its field's type; `rows_match_fields`
        // checks every row.
        if let Ok(v) = serde_json::from_value(value) {
            *self = v;
        }
    }
}

/// The spellings Celery's command line accepts for booleans.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

pub fn non_empty(value: String) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(value)
}

pub fn positive(v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a positive number of seconds, not {v}"))
    }
}

/// `result_expires`: 0 means "never expire", as in Celery.
pub fn expires(v: f64) -> Result<Option<u64>, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a non-negative number of seconds, not {v}"));
    }
    let secs = v.ceil() as u64;
    Ok((secs > 0).then_some(secs))
}

/// Whole seconds, rounded up so a fractional value never becomes 0.
pub fn seconds(v: f64) -> Result<u64, String> {
    positive(v).map(|v| v.ceil() as u64)
}

fn concurrency(n: i64) -> Result<usize, String> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("must be at least 1, not {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> AppConfig {
        AppConfig::with_defaults("proj", std::path::Path::new("proj.toml"))
    }

    #[test]
    fn settings_start_valid() {
        for s in SETTINGS {
            if let Initial::Is(text) = s.initial {
                assert!(s.kind.from_text(text).is_ok(), "{}: {text:?}", s.name);
            }
            if let Initial::SameAs(other) = s.initial {
                let pos = |n: &str| SETTINGS.iter().position(|s| s.name == n);
                assert!(pos(other) < pos(s.name), "{} follows a later row", s.name);
            }
        }
    }

    #[test]
    fn rows_match_fields() {
        // Every row's field takes what its kind makes, and two rows never
        // share a field or a name.
        let samples = |kind: Kind| match kind {
            Kind::Url => vec!["redis://x:1/2"],
            Kind::Name => vec!["q"],
            Kind::Flag => vec!["true", "false"],
            Kind::Limit => vec!["2.5", "none"],
            Kind::Expires => vec!["7", "0"],
            Kind::Seconds => vec!["9"],
            Kind::Count => vec!["3", "none"],
            Kind::Text => vec!["m", "none"],
            Kind::Strings => vec![r#"{"password": "p"}"#, "none"],
        };
        for s in SETTINGS {
            for text in samples(s.kind) {
                let mut app = blank();
                let value = s.kind.from_text(text).unwrap();
                s.set(&mut app, value.clone());
                assert_eq!(s.get(&app), value, "{} = {text}", s.name);
                for other in SETTINGS.iter().filter(|o| o.path() != s.path()) {
                    assert_eq!(
                        other.get(&app),
                        other.get(&blank()),
                        "{} moved {}",
                        s.path(),
                        other.path()
                    );
                }
            }
        }
    }

    #[test]
    fn kinds_read_python_values_as_a_celery_worker_would() {
        assert_eq!(Kind::Expires.from_python(&Value::Null), Some(Value::Null));
        assert_eq!(Kind::Expires.from_python(&(-1.0).into()), None);
        assert_eq!(Kind::Url.from_python(&"".into()), None);
        assert_eq!(Kind::Flag.from_python(&1.into()), Some(true.into()));
        assert_eq!(Kind::Count.from_python(&"4".into()), Some(Value::Null));
        assert_eq!(Kind::Seconds.from_python(&0.5.into()), Some(1.into()));
        assert_eq!(Kind::Text.from_python(&"".into()), Some(Value::Null));
        assert_eq!(
            Kind::Strings.from_python(&serde_json::json!({"password": "p", "port": 1, "x": null})),
            Some(serde_json::json!({"password": "p", "port": "1"}))
        );
        assert_eq!(
            Kind::Strings.from_python(&"str".into()),
            Some(serde_json::json!({}))
        );
    }
}
