//! The app file (`-A proj` → `proj.toml`): Celery's setting names as TOML
//! keys, checked against the settings table, and the `[tasks]` table. Errors
//! say the file, the line and column, and the key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use toml::Spanned;

use super::settings::{self, Refusal, SETTINGS};
use super::AppError;
use crate::tasks::python::PythonApp;
use crate::tasks::{Builtin, Executor, Registry, TaskSpec};

/// The keys of an app file that are not settings.
const PYTHON: &str = "python";
const TASKS: &str = "tasks";

/// What an app file gave: settings by path (`Setting::path`, checked by their kind), the
/// Celery app whose tasks it adds (`python = "proj"`), and its tasks.
#[derive(Debug, Default)]
pub struct AppFile {
    pub settings: Map<String, Value>,
    pub python: Option<PythonApp>,
    pub tasks: Registry,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    builtin: Option<String>,
    exec: Option<Vec<String>>,
    acks_late: Option<bool>,
    time_limit: Option<f64>,
    soft_time_limit: Option<f64>,
    ignore_result: Option<bool>,
}

/// A TOML table whose keys keep their place in the text. Values keep none:
/// toml 0.8 cannot put a span on a header's or a dotted key's implicit
/// table, so a value is found after its key (`Source::value_at`).
enum Node {
    Value(toml::Value),
    Table(Vec<(Spanned<String>, Node)>),
}

/// Turns byte offsets into `file: line L, column C: message`.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

/// Parses an app file's text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<AppFile, AppError> {
    let src = Source { path, text };
    let root = match toml::from_str::<Node>(text) {
        Ok(Node::Table(entries)) => entries,
        Ok(Node::Value(_)) => Vec::new(),
        // A date arrives as a map under toml's private key, which has no
        // place to keep: say what it is (no setting takes a date).
        Err(err) if err.message().contains("$__toml_private_datetime") => {
            return Err(src.error(err.span(), "invalid type: date, expected no date"))
        }
        Err(err) => return Err(src.error(err.span(), err.message().trim_end())),
    };
    let mut file = AppFile::default();
    for (key, node) in root {
        match key.get_ref().as_str() {
            PYTHON => {
                let module = src.setting(&key, settings::Kind::Name, "python", node)?;
                file.python = module.as_str().map(|module| PythonApp {
                    module: module.to_string(),
                    python: PathBuf::from("python3"),
                    conf: Map::new(),
                });
            }
            TASKS => {
                let table = src.table(&key, node.into_value())?;
                for (task, entry) in table {
                    add_tasks(&mut file.tasks, task, entry).map_err(|(task, m)| {
                        src.error(locate_task(text, &task), format!("task {task:?}: {m}"))
                    })?;
                }
            }
            name if is_section(name) => {
                let Node::Table(entries) = node else {
                    src.table(&key, node.into_value())?;
                    continue;
                };
                for (inner, node) in entries {
                    let row = SETTINGS
                        .iter()
                        .find(|s| s.section == Some(name) && s.name == inner.get_ref())
                        .ok_or_else(|| {
                            let known = SETTINGS.iter().filter(|s| s.section == Some(name));
                            src.unknown(&inner, known.map(|s| s.name))
                        })?;
                    let value = src.setting(&inner, row.kind, row.name, node)?;
                    file.settings.insert(row.path(), value);
                }
            }
            name => {
                let row = SETTINGS
                    .iter()
                    .find(|s| s.section.is_none() && s.name == name)
                    .ok_or_else(|| src.unknown(&key, top_level_keys()))?;
                let value = src.setting(&key, row.kind, row.name, node)?;
                file.settings.insert(row.path(), value);
            }
        }
    }
    Ok(file)
}

fn is_section(name: &str) -> bool {
    SETTINGS.iter().any(|s| s.section == Some(name))
}

/// The keys an app file may have at its top level, in the table's order.
fn top_level_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = Vec::new();
    for s in SETTINGS {
        let key = s.section.unwrap_or(s.name);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.extend([PYTHON, TASKS]);
    keys
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl fmt::Display) -> AppError {
        let file = self.path.display();
        match span {
            Some(span) => {
                let start = span.start.min(self.text.len());
                let before = self.text.get(..start).unwrap_or("");
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                AppError::Invalid(format!("{file}: line {line}, column {column}: {message}"))
            }
            None => AppError::Invalid(format!("{file}: {message}")),
        }
    }

    /// `unknown field `x`, expected one of ...`, as serde words it.
    fn unknown<'k>(
        &self,
        key: &Spanned<String>,
        known: impl IntoIterator<Item = &'k str>,
    ) -> AppError {
        let known: Vec<String> = known.into_iter().map(|k| format!("`{k}`")).collect();
        let expected = match known.as_slice() {
            [one] => one.clone(),
            many => format!("one of {}", many.join(", ")),
        };
        self.error(
            Some(key.span()),
            format!("unknown field `{}`, expected {expected}", key.get_ref()),
        )
    }

    /// Where the value of `key = value` starts: after the `=` that follows
    /// the key.
    fn value_at(&self, key: &Spanned<String>) -> Range<usize> {
        let end = key.span().end.min(self.text.len());
        let rest = self.text.get(end..).unwrap_or("");
        let after_eq = rest
            .trim_start_matches([' ', '\t'])
            .strip_prefix('=')
            .map(|r| r.trim_start_matches([' ', '\t']));
        let start = after_eq.map_or(end, |r| self.text.len() - r.len());
        start..start
    }

    /// A value that must be a table, refused as serde words it.
    fn table(&self, key: &Spanned<String>, value: toml::Value) -> Result<toml::Table, AppError> {
        toml::Table::deserialize(value)
            .map_err(|e| self.error(Some(self.value_at(key)), e.message().trim_end()))
    }

    /// One setting's value through its kind; a refusal points at the value.
    fn setting(
        &self,
        key: &Spanned<String>,
        kind: settings::Kind,
        name: &str,
        node: Node,
    ) -> Result<Value, AppError> {
        kind.from_toml(node.into_value()).map_err(|r| {
            let at = Some(self.value_at(key));
            match r {
                Refusal::Type(m) => self.error(at, m),
                Refusal::Check(m) => self.error(at, format!("{name} {m}")),
            }
        })
    }
}

impl Node {
    fn into_value(self) -> toml::Value {
        match self {
            Node::Value(v) => v,
            Node::Table(entries) => toml::Value::Table(
                entries
                    .into_iter()
                    .map(|(k, n)| (k.into_inner(), n.into_value()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(|v| Node::Value(v.into()))
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<toml::Value>()? {
            items.push(item);
        }
        Ok(Node::Value(toml::Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        // A date arrives as a one-entry map with toml's private key; it
        // then fails as "a string/number expected", like any wrong type.
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value::<Node>()?));
        }
        Ok(Node::Table(entries))
    }
}

/// Where task `name` is defined: the line starting with its quoted or bare
/// key, else (for `[tasks.a]` headers) with its last segment as a key.
fn locate_task(text: &str, name: &str) -> Option<Range<usize>> {
    let last = name.rsplit('.').next().unwrap_or(name);
    let keys = [
        format!("\"{name}\""),
        format!("'{name}'"),
        name.to_string(),
        last.to_string(),
    ];
    keys.iter().find_map(|key| {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if let Some(rest) = trimmed.strip_prefix(key.as_str()) {
                if rest.trim_start().starts_with('=') {
                    return Some(offset + indent..offset + indent + key.len());
                }
            }
            offset += line.len();
        }
        None
    })
}

/// Adds one `[tasks]` entry. A table of tables with neither `builtin` nor
/// `exec` is a namespace, so both `"proj.tasks.add" = {...}` and the bare
/// dotted key `proj.tasks.add = {...}` (TOML's nested tables) name the task
/// `proj.tasks.add`. Errors carry the full task name.
fn add_tasks(
    registry: &mut Registry,
    name: String,
    value: toml::Value,
) -> Result<(), (String, String)> {
    if let toml::Value::Table(table) = &value {
        let namespace = !table.is_empty()
            && !table.contains_key("builtin")
            && !table.contains_key("exec")
            && table.values().all(toml::Value::is_table);
        if namespace {
            if let toml::Value::Table(table) = value {
                for (part, inner) in table {
                    add_tasks(registry, format!("{name}.{part}"), inner)?;
                }
            }
            return Ok(());
        }
    }
    let raw = RawTask::deserialize(value)
        .map_err(|e| (name.clone(), e.message().trim_end().to_string()))?;
    let spec = task_spec(raw).map_err(|m| (name.clone(), m))?;
    registry.insert(name, spec);
    Ok(())
}

fn task_spec(raw: RawTask) -> Result<TaskSpec, String> {
    let executor = match (raw.builtin, raw.exec) {
        (Some(_), Some(_)) => return Err("give either `builtin` or `exec`, not both".into()),
        (None, None) => return Err("needs `builtin = \"NAME\"` or `exec = [\"cmd\", ...]`".into()),
        (Some(name), None) => match Builtin::from_name(&name) {
            Some(b) => Executor::Builtin(b),
            None => {
                return Err(format!(
                    "unknown builtin {name:?}, expected one of {}",
                    Builtin::ALL.map(Builtin::name).join(", ")
                ));
            }
        },
        (None, Some(argv)) => {
            if argv.first().is_none_or(|cmd| cmd.is_empty()) {
                return Err("`exec` needs a command: exec = [\"cmd\", \"arg\", ...]".into());
            }
            Executor::Exec(argv)
        }
    };
    let limit = |v: Option<f64>, key: &str| {
        v.map(settings::positive)
            .transpose()
            .map_err(|m| format!("{key} {m}"))
    };
    Ok(TaskSpec {
        executor,
        acks_late: raw.acks_late,
        reject_on_worker_lost: None,
        time_limit: limit(raw.time_limit, "time_limit")?,
        soft_time_limit: limit(raw.soft_time_limit, "soft_time_limit")?,
        ignore_result: raw.ignore_result.unwrap_or(false),
    })
}
