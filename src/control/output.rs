//! What `celery inspect/control/status` print (celery/bin/control.py and
//! `CLIContext` in celery/bin/base.py): one `->  <node>: OK` line per reply
//! with the reply under it, `N node(s) online.`, and `-j` JSON. Colours
//! (click's ANSI styles) only on a terminal, as click strips them otherwise;
//! dict replies are not syntax-highlighted (celery uses pygments there).

use serde_json::{Map, Value};

use crate::protocol::{pyjson, pyrepr};

/// Output options shared by the three commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
    pub quiet: bool,
}

impl Style {
    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("{code}{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn ok(&self) -> String {
        self.paint("OK", "\x1b[32m\x1b[1m")
    }

    fn error(&self) -> String {
        self.paint("ERROR", "\x1b[31m\x1b[1m")
    }
}

/// The lines printed for one reply `{"<node>": value}`: `->  node: OK`,
/// and with `show_body` the value indented by 4 (`        pong`).
pub fn say_reply(reply: &Map<String, Value>, show_body: bool, style: &Style) -> String {
    let Some((node, value)) = reply.iter().next() else {
        return String::new();
    };
    let node = style.paint(&format!("{node}: "), "\x1b[36m\x1b[1m");
    let (status, body) = pretty(value, style);
    let dir = if style.quiet {
        String::new()
    } else {
        format!("{} ", style.paint("->", "\x1b[37m\x1b[1m"))
    };
    let mut out = format!("{dir} {node}{status}\n");
    if show_body && !body.is_empty() {
        out.push_str(&indent(&body, 4));
        out.push('\n');
    }
    out
}

/// `CLIContext.pretty`: the status word and the text of a reply value.
fn pretty(value: &Value, style: &Style) -> (String, String) {
    match value {
        Value::Array(items) => (style.ok(), pretty_list(items, style)),
        Value::Object(map) if map.contains_key("ok") => {
            (style.ok(), indent(&pretty(&map["ok"], style).1, 4))
        }
        Value::Object(map) if map.contains_key("error") => {
            (style.error(), indent(&pretty(&map["error"], style).1, 4))
        }
        Value::Object(_) => (style.ok(), dumps_indented(value)),
        Value::String(s) => (style.ok(), s.clone()),
        other => (style.ok(), pyrepr::python_repr(other)),
    }
}

fn pretty_list(items: &[Value], style: &Style) -> String {
    if items.is_empty() {
        return "- empty -".into();
    }
    let bullet = style.paint("*", "\x1b[37m");
    items
        .iter()
        .map(|item| match item {
            // f"{item}": str() of a string is the string itself.
            Value::String(s) => format!("{bullet} {s}"),
            other => format!("{bullet} {}", pyrepr::python_repr(other)),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// celery's `text.indent`: every line, empty ones too, gets the prefix.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.split('\n')
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `json.dumps(value, sort_keys=True, indent=4)`.
pub fn dumps_indented(value: &Value) -> String {
    let mut out = String::new();
    write_indented(&mut out, value, 0);
    out
}

fn write_indented(out: &mut String, value: &Value, level: usize) {
    let pad = |n: usize| " ".repeat(4 * n);
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                out.push_str(&pad(level + 1));
                write_indented(out, item, level + 1);
            }
            out.push('\n');
            out.push_str(&pad(level));
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push_str("{\n");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                out.push_str(&pad(level + 1));
                out.push_str(&pyjson::to_string(&Value::String(k.clone())));
                out.push_str(": ");
                write_indented(out, v, level + 1);
            }
            out.push('\n');
            out.push_str(&pad(level));
            out.push('}');
        }
        other => out.push_str(&pyjson::to_string(other)),
    }
}

/// `\n1 node online.` / `\n2 nodes online.` (the leading blank line is celery's).
pub fn nodes_online(count: usize) -> String {
    format!(
        "\n{count} {} online.\n",
        if count == 1 { "node" } else { "nodes" }
    )
}

/// `flatten_reply`: the replies as one `{node: value}` dict, in arrival order.
pub fn by_node(replies: &[Map<String, Value>]) -> Map<String, Value> {
    let mut out = Map::new();
    for reply in replies {
        for (node, value) in reply {
            out.insert(node.clone(), value.clone());
        }
    }
    out
}

/// kombu's `json.dumps` (Python's default separators).
pub fn dumps(value: &Value) -> String {
    pyjson::to_string(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const PLAIN: Style = Style {
        color: false,
        quiet: false,
    };

    #[test]
    fn ping_reply_is_printed_as_celery_does() {
        let r = reply(json!({"w1@vm": {"ok": "pong"}}));
        assert_eq!(say_reply(&r, true, &PLAIN), "->  w1@vm: OK\n        pong\n");
        assert_eq!(say_reply(&r, false, &PLAIN), "->  w1@vm: OK\n");
    }

    #[test]
    fn lists_errors_and_dicts() {
        let r = reply(json!({"w": ["a.add", "a.mul"]}));
        assert_eq!(
            say_reply(&r, true, &PLAIN),
            "->  w: OK\n    * a.add\n    * a.mul\n"
        );
        let r = reply(json!({"w": []}));
        assert_eq!(say_reply(&r, true, &PLAIN), "->  w: OK\n    - empty -\n");
        let r = reply(json!({"w": [{"id": "x", "n": null}]}));
        assert_eq!(
            say_reply(&r, true, &PLAIN),
            "->  w: OK\n    * {'id': 'x', 'n': None}\n"
        );
        let r = reply(json!({"w": {"error": "KeyError('x')"}}));
        assert_eq!(
            say_reply(&r, true, &PLAIN),
            "->  w: ERROR\n        KeyError('x')\n"
        );
        let r = reply(json!({"w": {"b": [1, {}], "a": "é"}}));
        assert_eq!(
            say_reply(&r, true, &PLAIN),
            "->  w: OK\n    {\n        \"a\": \"\\u00e9\",\n        \"b\": [\n            1,\n            {}\n        ]\n    }\n"
        );
    }

    #[test]
    fn colours_and_quiet() {
        let r = reply(json!({"w": {"ok": "pong"}}));
        let color = Style {
            color: true,
            quiet: false,
        };
        assert_eq!(
            say_reply(&r, false, &color),
            "\x1b[37m\x1b[1m->\x1b[0m  \x1b[36m\x1b[1mw: \x1b[0m\x1b[32m\x1b[1mOK\x1b[0m\n"
        );
        let quiet = Style {
            color: false,
            quiet: true,
        };
        assert_eq!(say_reply(&r, false, &quiet), " w: OK\n");
    }

    #[test]
    fn counts_and_json() {
        assert_eq!(nodes_online(1), "\n1 node online.\n");
        assert_eq!(nodes_online(2), "\n2 nodes online.\n");
        let replies = vec![reply(json!({"a": {"ok": "pong"}})), reply(json!({"b": 1}))];
        assert_eq!(
            dumps(&Value::Object(by_node(&replies))),
            r#"{"a": {"ok": "pong"}, "b": 1}"#
        );
    }
}
