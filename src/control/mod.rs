//! `rmulti inspect|control|status`: Celery's remote-control client with
//! `celery inspect/control/status`'s grammar, output and exit codes (69 when
//! no node replied). It speaks the pidbox protocol (`protocol::pidbox`) over
//! Redis (`client`), so it serves Python Celery workers and rmulti nodes
//! alike, without a Python start.

pub mod client;
pub mod output;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value};

use crate::app::{AppConfig, Overrides};
use crate::cli::ControlArgs;
use crate::exit;
use output::Style;

/// Celery's `EX_UNAVAILABLE`: no node replied, or the broker is unreachable.
pub const UNAVAILABLE: i32 = 69;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Inspect,
    Control,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Inspect => "inspect",
            Kind::Control => "control",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Arg {
    Str,
    Int,
    Float,
    /// celery's `strtobool`.
    Bool,
}

/// One remote command as Celery's `Panel.meta` lists it (visible ones).
struct Command {
    name: &'static str,
    kind: Kind,
    args: &'static [(&'static str, Arg)],
    variadic: Option<&'static str>,
    signature: &'static str,
}

const fn cmd(
    name: &'static str,
    kind: Kind,
    args: &'static [(&'static str, Arg)],
    variadic: Option<&'static str>,
    signature: &'static str,
) -> Command {
    Command {
        name,
        kind,
        args,
        variadic,
        signature,
    }
}

use Arg::*;
use Kind::*;

/// Celery 5.7's visible commands, sorted by name as its listing is.
const COMMANDS: &[Command] = &[
    cmd("active", Inspect, &[], None, ""),
    cmd("active_queues", Inspect, &[], None, ""),
    cmd(
        "add_consumer",
        Control,
        &[
            ("queue", Str),
            ("exchange", Str),
            ("exchange_type", Str),
            ("routing_key", Str),
        ],
        None,
        "<queue> [exchange [type [routing_key]]]",
    ),
    cmd(
        "autoscale",
        Control,
        &[("max", Int), ("min", Int)],
        None,
        "[max [min]]",
    ),
    cmd(
        "cancel_consumer",
        Control,
        &[("queue", Str)],
        None,
        "<queue>",
    ),
    cmd("clock", Inspect, &[], None, ""),
    cmd(
        "conf",
        Inspect,
        &[("with_defaults", Bool)],
        None,
        "[include_defaults=False]",
    ),
    cmd("disable_events", Control, &[], None, ""),
    cmd("election", Control, &[], None, ""),
    cmd("enable_events", Control, &[], None, ""),
    cmd("heartbeat", Control, &[], None, ""),
    cmd(
        "memdump",
        Inspect,
        &[("samples", Int)],
        None,
        "[n_samples=10]",
    ),
    cmd("memsample", Inspect, &[], None, ""),
    cmd(
        "objgraph",
        Inspect,
        &[("type", Str), ("num", Int), ("max_depth", Int)],
        None,
        "[object_type=Request] [num=200 [max_depth=10]]",
    ),
    cmd("ping", Inspect, &[], None, ""),
    cmd("pool_grow", Control, &[("n", Int)], None, "[N=1]"),
    cmd("pool_restart", Control, &[], None, ""),
    cmd("pool_shrink", Control, &[("n", Int)], None, "[N=1]"),
    cmd(
        "query_task",
        Inspect,
        &[],
        Some("ids"),
        "[id1 [id2 [... [idN]]]]",
    ),
    cmd(
        "rate_limit",
        Control,
        &[("task_name", Str), ("rate_limit", Str)],
        None,
        "<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>",
    ),
    cmd(
        "registered",
        Inspect,
        &[],
        Some("taskinfoitems"),
        "[attr1 [attr2 [... [attrN]]]]",
    ),
    cmd("report", Inspect, &[], None, ""),
    cmd("reserved", Inspect, &[], None, ""),
    cmd(
        "revoke",
        Control,
        &[],
        Some("task_id"),
        "[id1 [id2 [... [idN]]]]",
    ),
    cmd(
        "revoke_by_stamped_headers",
        Control,
        &[],
        Some("headers"),
        "[key1=value1 [key2=value2 [... [keyN=valueN]]]]",
    ),
    cmd("revoked", Inspect, &[], None, ""),
    cmd("scheduled", Inspect, &[], None, ""),
    cmd("shutdown", Control, &[], None, ""),
    cmd("stats", Inspect, &[], None, ""),
    cmd(
        "terminate",
        Control,
        &[("signal", Str)],
        Some("task_id"),
        "<signal> [id1 [id2 [... [idN]]]]",
    ),
    cmd(
        "time_limit",
        Control,
        &[("task_name", Str), ("soft", Float), ("hard", Float)],
        None,
        "<task_name> <soft_secs> [hard_secs]",
    ),
];

/// A command line that celery would reject with a usage error (exit 2).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct UsageError(String);

/// celery's `_compile_arguments`: positional values by the command's
/// typed argument list, the rest into its variadic argument.
fn compile_arguments(
    kind: Kind,
    name: &str,
    args: &[String],
) -> Result<Map<String, Value>, UsageError> {
    let Some(command) = COMMANDS.iter().find(|c| c.kind == kind && c.name == name) else {
        let names: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name)
            .collect();
        return Err(UsageError(format!(
            "Command {name} not recognized. Available {} commands: {}",
            kind.name(),
            names.join(", ")
        )));
    };
    let mut out = Map::new();
    let mut rest = args;
    for (i, value) in args.iter().enumerate() {
        let Some((arg, typ)) = command.args.get(i) else {
            if command.variadic.is_some() {
                break;
            }
            // Python formats a missing signature as `None`.
            let signature = match command.signature {
                "" => "None",
                s => s,
            };
            return Err(UsageError(format!(
                "Command '{name}' takes arguments: {signature}"
            )));
        };
        out.insert((*arg).into(), convert(*typ, value)?);
        rest = &args[i + 1..];
    }
    if let Some(variadic) = command.variadic {
        out.insert(variadic.into(), Value::from(rest.to_vec()));
    }
    Ok(out)
}

fn convert(typ: Arg, value: &str) -> Result<Value, UsageError> {
    let bad = |what: &str| UsageError(format!("invalid {what}: {value:?}"));
    Ok(match typ {
        Arg::Str => Value::from(value),
        Arg::Int => Value::from(value.trim().parse::<i64>().map_err(|_| bad("integer"))?),
        Arg::Float => {
            let f = value.trim().parse::<f64>().map_err(|_| bad("number"))?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| bad("number"))?
        }
        Arg::Bool => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Value::Bool(true),
            "false" | "0" | "no" | "off" | "n" | "f" => Value::Bool(false),
            _ => return Err(bad("boolean")),
        },
    })
}

/// Runs `rmulti inspect` / `rmulti control`; returns the exit status.
pub fn run(kind: Kind, args: ControlArgs) -> i32 {
    let Some(command) = args.command.clone() else {
        return usage(
            kind.name(),
            &UsageError("Missing argument 'COMMAND'.".into()),
        );
    };
    let arguments = match compile_arguments(kind, &command, &args.args) {
        Ok(a) => a,
        Err(e) => return usage(kind.name(), &e),
    };
    let show = |reply: &Map<String, Value>, style: &Style| output::say_reply(reply, true, style);
    let replies = match broadcast(&args, &command, &arguments, &show) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    let _ = match (kind, args.json) {
        (Kind::Inspect, true) => writeln!(
            out,
            "{}",
            output::dumps(&Value::Object(output::by_node(&replies)))
        ),
        (Kind::Inspect, false) if !args.quiet => {
            write!(
                out,
                "{}",
                output::nodes_online(output::by_node(&replies).len())
            )
        }
        (Kind::Control, true) => writeln!(
            out,
            "{}",
            output::dumps(&Value::Array(
                replies.into_iter().map(Value::Object).collect()
            ))
        ),
        _ => Ok(()),
    };
    exit::OK
}

/// Runs `rmulti status`: `inspect ping` showing only who answered.
pub fn run_status(args: ControlArgs) -> i32 {
    if let Some(extra) = args.command.as_ref() {
        return usage(
            "status",
            &UsageError(format!("Got unexpected extra argument ({extra})")),
        );
    }
    let show = |reply: &Map<String, Value>, style: &Style| output::say_reply(reply, false, style);
    let replies = match broadcast(&args, "ping", &Map::new(), &show) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let nodes = output::by_node(&replies);
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", output::dumps(&Value::Object(nodes.clone())));
    }
    if !args.quiet {
        let _ = write!(out, "{}", output::nodes_online(nodes.len()));
    }
    exit::OK
}

fn usage(command: &str, e: &UsageError) -> i32 {
    eprintln!("Usage: rmulti {command} [OPTIONS] COMMAND\nTry 'rmulti {command} --help' for help.\n\nError: {e}");
    exit::USAGE
}

/// Sends the command and prints each reply as it arrives (unless `-j`);
/// `Err` is the exit status, its message already printed.
fn broadcast(
    args: &ControlArgs,
    method: &str,
    arguments: &Map<String, Value>,
    show: &dyn Fn(&Map<String, Value>, &Style) -> String,
) -> Result<Vec<Map<String, Value>>, i32> {
    let url = match broker_url(args) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return Err(exit::CONFIG);
        }
    };
    let style = Style {
        color: !args.no_color
            && std::env::var_os("NO_COLOR").is_none()
            && std::io::stdout().is_terminal(),
        quiet: args.quiet,
    };
    let destination: Option<Vec<String>> = args.destination.as_ref().map(|d| {
        d.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    });
    let timeout =
        crate::protocol::time::duration_secs(args.timeout).unwrap_or(Duration::from_secs(1));
    let sent = (|| -> anyhow::Result<Vec<Map<String, Value>>> {
        let db = crate::broker::url::parse(&url)?.db();
        let mut con = crate::broker::connect(&url)?;
        let b = client::Broadcast {
            method,
            arguments,
            destination: destination.as_deref(),
            timeout,
        };
        let replies = client::call(&mut con, db, &b, |reply| {
            if !args.json {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(show(reply, &style).as_bytes());
                let _ = out.flush();
            }
        })?;
        Ok(replies)
    })();
    match sent {
        Ok(replies) if replies.is_empty() => {
            eprintln!("Error: No nodes replied within time constraint");
            Err(UNAVAILABLE)
        }
        Ok(replies) => Ok(replies),
        Err(e) => {
            eprintln!(
                "Error: Could not connect to the message broker. Please make sure your broker \
                 (e.g., RabbitMQ or Redis) is running and the connection settings are correct. \
                 Reason: {e:#}"
            );
            Err(UNAVAILABLE)
        }
    }
}

/// The broker: `-b`, else `CELERY_BROKER_URL`, else the app's (`-A`: an app
/// file, or a Celery app described by Python), else Celery's default.
fn broker_url(args: &ControlArgs) -> anyhow::Result<String> {
    let overrides = Overrides {
        broker: args.broker.clone(),
        result_backend: None,
    };
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let url = broker_url_of(args, &overrides, &env)?;
    // A URL that cannot be used is a configuration error, as from `worker`
    // and `call`, not an unreachable broker.
    crate::broker::connection::validate_url(&url)?;
    Ok(url)
}

fn broker_url_of(
    args: &ControlArgs,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let without_app = || Ok(AppConfig::without_file(env, overrides)?.broker_url);
    if args.broker.is_some() || env("CELERY_BROKER_URL").is_some() {
        return without_app();
    }
    let Some(app) = &args.app else {
        return without_app();
    };
    let cwd = std::env::current_dir().context("reading the working directory")?;
    if app.ends_with(".toml") || AppConfig::resolve(app, &cwd).exists() {
        let cfg = AppConfig::load(app, &cwd, env, overrides)
            .with_context(|| format!("Unable to load app {app}"))?;
        return Ok(cfg.broker_url);
    }
    let python = crate::tasks::python::interpreter(None, env);
    let names = crate::app::settings::host_names();
    let desc = crate::tasks::python::describe(&python, app, &cwd, &names)
        .with_context(|| format!("Unable to load app {app}"))?;
    Ok(AppConfig::from_python(app, &cwd, &desc, &python).broker_url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(kind: Kind, name: &str, args: &[&str]) -> Result<Value, UsageError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        compile_arguments(kind, name, &args).map(Value::Object)
    }

    #[test]
    fn arguments_compile_as_celerys_cli() {
        assert_eq!(compile(Inspect, "ping", &[]).unwrap(), json!({}));
        assert_eq!(
            compile(Control, "revoke", &["a", "b"]).unwrap(),
            json!({"task_id": ["a", "b"]})
        );
        assert_eq!(
            compile(Inspect, "registered", &[]).unwrap(),
            json!({"taskinfoitems": []})
        );
        assert_eq!(
            compile(Control, "terminate", &["SIGKILL", "a"]).unwrap(),
            json!({"signal": "SIGKILL", "task_id": ["a"]})
        );
        assert_eq!(
            compile(Control, "pool_grow", &["2"]).unwrap(),
            json!({"n": 2})
        );
        assert_eq!(
            compile(Control, "time_limit", &["t", "10"]).unwrap(),
            json!({"task_name": "t", "soft": 10.0})
        );
        assert_eq!(
            compile(Inspect, "conf", &["yes"]).unwrap(),
            json!({"with_defaults": true})
        );
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        let e = compile(Inspect, "revoke", &[]).unwrap_err();
        assert!(e.0.starts_with("Command revoke not recognized. Available inspect commands: active, active_queues, clock,"), "{e}");
        let e = compile(Inspect, "ping", &["x"]).unwrap_err();
        assert_eq!(e.0, "Command 'ping' takes arguments: None");
        assert!(compile(Control, "pool_grow", &["x"]).is_err());
        assert!(
            compile(Inspect, "hello", &[]).is_err(),
            "hello is not visible in celery's CLI"
        );
    }
}
