//! Celery's remote control ("pidbox") on kombu's Redis transport, as data:
//! the request a client PUBLISHes on the `celery.pidbox` fanout, who it is
//! for (`destination`, `pattern`/`matcher`), and the reply a node LPUSHes
//! to the client's reply queue (wire.md §8, fixtures `pidbox-*`).
//!
//! On Redis (checked against the fixtures and kombu 5.7's transport):
//! - a request is `PUBLISH /{db}.celery.pidbox <envelope>`; a node receives
//!   it with `PSUBSCRIBE /{db}.celery.pidbox`. Nothing is ever pushed to the
//!   node queue `<node>.celery.pidbox` that a Python worker also declares.
//! - a reply goes to the direct exchange `reply.celery.pidbox`: kombu reads
//!   the binding table `_kombu.binding.reply.celery.pidbox` (members
//!   `<routing key> SEP SEP <queue>`) and LPUSHes the envelope on every
//!   queue bound with the request's `reply_to.routing_key` — in practice
//!   `<oid>.reply.celery.pidbox`. No bound queue: the client is gone, and
//!   the reply is dropped.
//!
//! Garbage (not JSON, an envelope that is a list or a string, a body that is
//! not base64, wrong shapes) is a `PidboxError`, never a panic.

use serde_json::{Map, Value};

use super::envelope::{self, Envelope, EnvelopeError};
use super::pyjson;

/// The fanout exchange requests are broadcast on.
pub const EXCHANGE: &str = "celery.pidbox";
/// The direct exchange replies are routed through.
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// kombu's binding-member separator.
const SEP: &str = "\x06\x16";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PidboxError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("unsupported content type {0:?} (only application/json)")]
    ContentType(String),
    #[error("request body is not valid JSON: {0}")]
    BodyNotJson(String),
    #[error("request body is not a JSON object")]
    BodyNotObject,
    #[error("request field {field:?} is {found}, expected {expected}")]
    Shape {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
}

/// Where a reply goes: `reply_to` of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyTo {
    pub exchange: String,
    pub routing_key: String,
}

/// `destination` as sent. Celery clients send a list; Python's `in` test
/// makes a string a substring match, which is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    Nodes(Vec<String>),
    Text(String),
}

/// One decoded remote-control request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub arguments: Map<String, Value>,
    pub destination: Option<Destination>,
    pub pattern: Option<String>,
    pub matcher: Option<String>,
    /// Present when the sender waits for replies (a call, not a cast).
    pub reply_to: Option<ReplyTo>,
    pub ticket: Option<String>,
    /// The sender's Lamport clock (`headers.clock`; 0 when missing).
    pub clock: u64,
    /// `headers.expires`: absolute POSIX seconds, 0/absent for none. Python
    /// nodes do not check it; it is kept for whoever wants to.
    pub expires: Option<f64>,
}

impl Request {
    /// Decodes a message received on the `celery.pidbox` channel.
    pub fn decode(raw: &str) -> Result<Request, PidboxError> {
        let env = Envelope::parse(raw)?;
        if env.content_type != "application/json" {
            return Err(PidboxError::ContentType(env.content_type));
        }
        let body: Value = serde_json::from_slice(&env.body)
            .map_err(|e| PidboxError::BodyNotJson(e.to_string()))?;
        let Value::Object(mut body) = body else {
            return Err(PidboxError::BodyNotObject);
        };
        let method = match body.remove("method") {
            Some(Value::String(m)) => m,
            other => return Err(shape("method", "a string", other.as_ref())),
        };
        let arguments = match body.remove("arguments") {
            Some(Value::Object(a)) => a,
            None | Some(Value::Null) => Map::new(),
            Some(other) => return Err(shape("arguments", "an object", Some(&other))),
        };
        let destination = match body.remove("destination") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Destination::Text(s)),
            // Items that are not strings can never equal a node name.
            Some(Value::Array(items)) => Some(Destination::Nodes(
                items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            )),
            Some(other) => return Err(shape("destination", "a list", Some(&other))),
        };
        let pattern = optional_string(&mut body, "pattern")?;
        let matcher = optional_string(&mut body, "matcher")?;
        let ticket = optional_string(&mut body, "ticket")?;
        let reply_to = match body.remove("reply_to") {
            None | Some(Value::Null) => None,
            Some(Value::Object(mut r)) => {
                let exchange = match r.remove("exchange") {
                    Some(Value::String(s)) => s,
                    other => return Err(shape("reply_to.exchange", "a string", other.as_ref())),
                };
                let routing_key = match r.remove("routing_key") {
                    Some(Value::String(s)) => s,
                    other => return Err(shape("reply_to.routing_key", "a string", other.as_ref())),
                };
                Some(ReplyTo {
                    exchange,
                    routing_key,
                })
            }
            Some(other) => return Err(shape("reply_to", "an object", Some(&other))),
        };
        // A bad clock or expires header is ignored, as kombu's `or 0` does.
        let clock = env
            .headers
            .get("clock")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0)
            .map(|c| c as u64)
            .unwrap_or(0);
        let expires = env
            .headers
            .get("expires")
            .and_then(Value::as_f64)
            .filter(|e| *e > 0.0);
        Ok(Request {
            method,
            arguments,
            destination,
            pattern,
            matcher,
            reply_to,
            ticket,
            clock,
            expires,
        })
    }

    /// Whether node `node_name` handles this request: kombu's
    /// `Node.handle_message` rule. A non-empty destination decides alone;
    /// else a pattern with a matcher; else every node.
    pub fn matches(&self, node_name: &str) -> bool {
        match &self.destination {
            Some(Destination::Nodes(nodes)) if !nodes.is_empty() => {
                return nodes.iter().any(|n| n == node_name)
            }
            Some(Destination::Text(text)) if !text.is_empty() => return text.contains(node_name),
            _ => {}
        }
        match (self.pattern.as_deref(), self.matcher.as_deref()) {
            (Some(pattern), Some(matcher)) if !pattern.is_empty() && !matcher.is_empty() => {
                pattern_matches(node_name, pattern, matcher)
            }
            _ => true,
        }
    }

    /// Whether the sender waits for a reply.
    pub fn wants_reply(&self) -> bool {
        self.reply_to.is_some()
    }
}

fn optional_string(
    body: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, PidboxError> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(shape(field, "a string", Some(&other))),
    }
}

fn shape(field: &'static str, expected: &'static str, found: Option<&Value>) -> PidboxError {
    let found = match found {
        None => "missing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "an object",
    };
    PidboxError::Shape {
        field,
        expected,
        found,
    }
}

/// kombu's matchers: `glob` is `fnmatch(node, pattern)` (whole name),
/// `pcre` is `re.match(pattern, node)` (anchored at the start only). An
/// unknown matcher or a pattern that does not compile matches nothing.
pub fn pattern_matches(node_name: &str, pattern: &str, matcher: &str) -> bool {
    let regex = match matcher {
        "glob" => format!("(?s)^(?:{})$", glob_to_regex(pattern)),
        "pcre" => format!("^(?:{pattern})"),
        _ => return false,
    };
    regex::Regex::new(&regex).is_ok_and(|re| re.is_match(node_name))
}

/// Python's `fnmatch.translate`, as regex syntax: `*`, `?`, `[seq]`,
/// `[!seq]`; a `[` without its `]` is literal.
fn glob_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str("\\[");
                    continue;
                }
                let set = &chars[i..j];
                i = j + 1;
                let (negate, set) = match set.first() {
                    Some('!') => (true, &set[1..]),
                    _ => (false, set),
                };
                if set.is_empty() {
                    // `[!]` matches any one character; `[]` cannot occur here.
                    out.push_str(if negate { "." } else { "[^\\s\\S]" });
                    continue;
                }
                out.push('[');
                if negate {
                    out.push('^');
                }
                for (k, ch) in set.iter().enumerate() {
                    let is_range = *ch == '-' && k > 0 && k + 1 < set.len();
                    if is_range {
                        out.push('-');
                    } else if ch.is_ascii_alphanumeric() {
                        out.push(*ch);
                    } else {
                        out.push('\\');
                        out.push(*ch);
                    }
                }
                out.push(']');
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out
}

/// A request as `celery inspect`/`control` publishes it (for `rmulti
/// inspect`): body keys in kombu's order, `ticket`/`reply_to` only for a call.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    pub method: &'a str,
    pub arguments: &'a Map<String, Value>,
    pub destination: Option<&'a [String]>,
    /// `(ticket, reply routing key)` for a call.
    pub reply: Option<(&'a str, &'a str)>,
    pub clock: u64,
    /// Absolute POSIX seconds; 0 when the sender has no timeout.
    pub expires: f64,
    pub delivery_tag: &'a str,
}

impl NewRequest<'_> {
    /// The envelope to PUBLISH on `fanout_channel(.., EXCHANGE, "")`.
    pub fn encode(&self) -> String {
        let mut body = Map::new();
        body.insert("method".into(), self.method.into());
        body.insert("arguments".into(), Value::Object(self.arguments.clone()));
        body.insert(
            "destination".into(),
            match self.destination {
                Some(d) => Value::from(d.to_vec()),
                None => Value::Null,
            },
        );
        body.insert("pattern".into(), Value::Null);
        body.insert("matcher".into(), Value::Null);
        if let Some((ticket, routing_key)) = self.reply {
            body.insert("ticket".into(), ticket.into());
            body.insert(
                "reply_to".into(),
                serde_json::json!({"exchange": REPLY_EXCHANGE, "routing_key": routing_key}),
            );
        }
        let expires = if self.expires > 0.0 {
            Value::from(self.expires)
        } else {
            Value::from(0)
        };
        envelope::encode_kombu(
            &pyjson::to_string(&Value::Object(body)),
            serde_json::json!({"clock": self.clock, "expires": expires}),
            2,
            EXCHANGE,
            "",
            self.delivery_tag,
        )
    }
}

/// A node's reply to one request: body `{"<node>": value}`, headers
/// `{ticket, clock}`, routed by `reply_to`.
#[derive(Debug, Clone)]
pub struct Reply<'a> {
    pub node_name: &'a str,
    pub value: &'a Value,
    pub ticket: &'a str,
    pub clock: u64,
    pub reply_to: &'a ReplyTo,
    pub delivery_tag: &'a str,
}

impl Reply<'_> {
    /// The envelope to LPUSH on each queue of `reply_queues`.
    pub fn encode(&self) -> String {
        let mut body = Map::new();
        body.insert(self.node_name.into(), self.value.clone());
        envelope::encode_kombu(
            &pyjson::to_string(&Value::Object(body)),
            serde_json::json!({"ticket": self.ticket, "clock": self.clock}),
            1,
            &self.reply_to.exchange,
            &self.reply_to.routing_key,
            self.delivery_tag,
        )
    }
}

/// Celery's reply for a handler that raised, e.g. an unknown method:
/// `{"error": "KeyError('name')"}`.
pub fn error_reply(python_repr_of_exception: &str) -> Value {
    serde_json::json!({ "error": python_repr_of_exception })
}

/// The queues a direct exchange routes `routing_key` to, given the members
/// of its binding table (`SMEMBERS _kombu.binding.<exchange>`): kombu's
/// exact routing-key match. Members that are not `rk SEP pattern SEP queue`
/// are skipped.
pub fn reply_queues<'m>(members: &'m [String], routing_key: &str) -> Vec<&'m str> {
    let mut queues: Vec<&str> = members
        .iter()
        .filter_map(|m| {
            let mut parts = m.split(SEP);
            let (rk, _pattern, queue) = (parts.next()?, parts.next()?, parts.next()?);
            (parts.next().is_none() && rk == routing_key).then_some(queue)
        })
        .collect();
    queues.sort_unstable();
    queues.dedup();
    queues
}

/// The reply queue a kombu client declares for itself: `<oid>.reply.celery.pidbox`,
/// bound to `REPLY_EXCHANGE` with routing key `<oid>`.
pub fn reply_queue_name(oid: &str) -> String {
    format!("{oid}.{REPLY_EXCHANGE}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_fixture;

    fn raw(name: &str) -> String {
        test_fixture(name)["raw"]
            .as_str()
            .expect("fixture raw")
            .to_string()
    }

    const REQUESTS: &[&str] = &[
        "pidbox-request-active.json",
        "pidbox-request-active_queues.json",
        "pidbox-request-conf.json",
        "pidbox-request-control-revoke.json",
        "pidbox-request-hello-mingle.json",
        "pidbox-request-ping.json",
        "pidbox-request-registered.json",
        "pidbox-request-reserved.json",
        "pidbox-request-revoked.json",
        "pidbox-request-scheduled.json",
        "pidbox-request-stats.json",
        "pidbox-broadcast-enable-events.json",
        "pidbox-broadcast-heartbeat.json",
        "pidbox-broadcast-revoke-noreply.json",
        "pidbox-broadcast-revoke-terminate.json",
    ];

    #[test]
    fn decodes_every_request_fixture_as_its_decoded_body_says() {
        for name in REQUESTS {
            let fixture = test_fixture(name);
            let body = &fixture["decoded"]["body"];
            let req = Request::decode(&raw(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(req.method, body["method"].as_str().unwrap(), "{name}");
            assert_eq!(
                Value::Object(req.arguments.clone()),
                body["arguments"],
                "{name}"
            );
            assert_eq!(req.ticket.as_deref(), body["ticket"].as_str(), "{name}");
            match &req.reply_to {
                Some(r) => {
                    assert_eq!(r.exchange, body["reply_to"]["exchange"], "{name}");
                    assert_eq!(r.routing_key, body["reply_to"]["routing_key"], "{name}");
                }
                None => assert!(body.get("reply_to").is_none(), "{name}"),
            }
            assert_eq!(
                req.clock,
                fixture["decoded"]["headers"]["clock"].as_u64().unwrap()
            );
            assert!(req.matches("w1@vm"), "{name}");
            let command = fixture["redis_command"].as_array().unwrap();
            assert_eq!(command[0], "PUBLISH");
            assert_eq!(command[1], envelope::fanout_channel("", 0, EXCHANGE, ""));
        }
    }

    #[test]
    fn ping_request_is_a_call_and_broadcast_revoke_a_cast_with_a_string_id() {
        let ping = Request::decode(&raw("pidbox-request-ping.json")).unwrap();
        assert!(ping.wants_reply());
        assert_eq!(ping.expires, Some(1795476868.1741946));
        let revoke = Request::decode(&raw("pidbox-broadcast-revoke-noreply.json")).unwrap();
        assert!(!revoke.wants_reply());
        assert_eq!(revoke.expires, None);
        assert_eq!(
            revoke.arguments["task_id"],
            "a0a80de8-ff08-4128-a4e8-999a70bc8c6d"
        );
    }

    #[test]
    fn rebuilds_every_request_fixture_sent_by_the_cli_byte_for_byte() {
        for name in REQUESTS {
            let fixture = test_fixture(name);
            let body = &fixture["decoded"]["body"];
            let headers = &fixture["decoded"]["headers"];
            let req = Request::decode(&raw(name)).unwrap();
            let destination: Option<Vec<String>> = match req.destination {
                Some(Destination::Nodes(n)) => Some(n),
                _ => None,
            };
            let reply = req
                .reply_to
                .as_ref()
                .map(|r| (req.ticket.as_deref().unwrap(), r.routing_key.as_str()));
            let encoded = NewRequest {
                method: &req.method,
                arguments: &req.arguments,
                destination: destination.as_deref(),
                reply,
                clock: req.clock,
                expires: headers["expires"].as_f64().unwrap(),
                delivery_tag: fixture["decoded"]["properties"]["delivery_tag"]
                    .as_str()
                    .unwrap(),
            }
            .encode();
            assert_eq!(encoded, raw(name), "{name} ({body})");
        }
    }

    #[test]
    fn rebuilds_every_reply_fixture_byte_for_byte() {
        let replies = [
            ("pidbox-reply-ping.json", "pidbox-request-ping.json"),
            ("pidbox-reply-active.json", "pidbox-request-active.json"),
            (
                "pidbox-reply-active_queues.json",
                "pidbox-request-active_queues.json",
            ),
            ("pidbox-reply-conf.json", "pidbox-request-conf.json"),
            (
                "pidbox-reply-control-revoke.json",
                "pidbox-request-control-revoke.json",
            ),
            (
                "pidbox-reply-hello-mingle.json",
                "pidbox-request-hello-mingle.json",
            ),
            (
                "pidbox-reply-registered.json",
                "pidbox-request-registered.json",
            ),
            ("pidbox-reply-reserved.json", "pidbox-request-reserved.json"),
            ("pidbox-reply-revoked.json", "pidbox-request-revoked.json"),
            (
                "pidbox-reply-scheduled.json",
                "pidbox-request-scheduled.json",
            ),
            ("pidbox-reply-stats.json", "pidbox-request-stats.json"),
        ];
        for (reply_name, request_name) in replies {
            let fixture = test_fixture(reply_name);
            let decoded = &fixture["decoded"];
            let request = Request::decode(&raw(request_name)).unwrap();
            let reply_to = request.reply_to.as_ref().unwrap();
            let (node, value) = decoded["body"].as_object().unwrap().iter().next().unwrap();
            let encoded = Reply {
                node_name: node,
                value,
                ticket: request.ticket.as_deref().unwrap(),
                clock: decoded["headers"]["clock"].as_u64().unwrap(),
                reply_to,
                delivery_tag: decoded["properties"]["delivery_tag"].as_str().unwrap(),
            }
            .encode();
            assert_eq!(encoded, raw(reply_name), "{reply_name}");
            // The LPUSH goes to the queue bound with the reply routing key.
            let command = fixture["redis_command"].as_array().unwrap();
            assert_eq!(command[0], "LPUSH");
            let members = vec![
                format!("other{SEP}{SEP}other.reply.celery.pidbox"),
                format!(
                    "{rk}{SEP}{SEP}{q}",
                    rk = reply_to.routing_key,
                    q = reply_queue_name(&reply_to.routing_key)
                ),
            ];
            assert_eq!(
                reply_queues(&members, &reply_to.routing_key),
                vec![command[1].as_str().unwrap()],
                "{reply_name}"
            );
        }
    }

    #[test]
    fn reply_queues_skip_malformed_members_and_other_keys() {
        let members = vec![
            "garbage".to_string(),
            format!("a{SEP}{SEP}a.q{SEP}extra"),
            format!("b{SEP}{SEP}b.q"),
        ];
        assert!(reply_queues(&members, "a").is_empty());
        assert_eq!(reply_queues(&members, "b"), vec!["b.q"]);
    }

    fn request_with(body: Value) -> Request {
        let raw = envelope::encode_kombu(
            &body.to_string(),
            serde_json::json!({}),
            2,
            EXCHANGE,
            "",
            "t",
        );
        Request::decode(&raw).unwrap()
    }

    #[test]
    fn destination_decides_before_pattern_as_kombu() {
        let r = request_with(
            serde_json::json!({"method": "ping", "destination": ["w1@a", "w2@a"], "pattern": "*", "matcher": "glob"}),
        );
        assert!(r.matches("w1@a"));
        assert!(!r.matches("w3@a"));
        // An empty destination falls through to the pattern.
        let r = request_with(
            serde_json::json!({"method": "ping", "destination": [], "pattern": "w1@*", "matcher": "glob"}),
        );
        assert!(r.matches("w1@a"));
        assert!(!r.matches("w2@a"));
        // A pattern without a matcher is ignored: everyone handles it.
        let r = request_with(serde_json::json!({"method": "ping", "pattern": "nope"}));
        assert!(r.matches("w1@a"));
        // A string destination is Python's substring test.
        let r = request_with(serde_json::json!({"method": "ping", "destination": "w1@a,w2@a"}));
        assert!(r.matches("w2@a"));
        assert!(!r.matches("w3@a"));
    }

    #[test]
    fn glob_and_pcre_match_as_fnmatch_and_re_match() {
        assert!(pattern_matches("w1@host", "w?@*", "glob"));
        assert!(pattern_matches("w1@host", "w[0-9]@host", "glob"));
        assert!(!pattern_matches("w1@host", "w[!0-9]@host", "glob"));
        assert!(
            !pattern_matches("w1@host", "w1", "glob"),
            "glob is a whole match"
        );
        assert!(pattern_matches("w1.x@h", "w1.x@h", "glob"));
        assert!(
            !pattern_matches("w1yx@h", "w1.x@h", "glob"),
            "a dot is literal"
        );
        assert!(
            pattern_matches("w[1@h", "w[1@h", "glob"),
            "unclosed [ is literal"
        );
        assert!(
            pattern_matches("w1@host", "w1", "pcre"),
            "re.match anchors only the start"
        );
        assert!(!pattern_matches("xw1@host", "w1", "pcre"));
        assert!(pattern_matches("w12@host", r"w\d+@", "pcre"));
        assert!(
            !pattern_matches("w1@host", "(", "pcre"),
            "a bad regex matches nothing"
        );
        assert!(!pattern_matches("w1@host", "*", "nosuch"));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "NotJson"),
            ("[1, 2]".into(), "NotEnvelope"),
            ("\"a string\"".into(), "NotEnvelope"),
            (
                r#"{"body": "%%%", "properties": {"body_encoding": "base64"}}"#.into(),
                "BadBase64",
            ),
            (
                envelope::encode_kombu("not json", serde_json::json!({}), 2, EXCHANGE, "", "t"),
                "BodyNotJson",
            ),
            (
                envelope::encode_kombu("[1]", serde_json::json!({}), 2, EXCHANGE, "", "t"),
                "BodyNotObject",
            ),
            (
                envelope::encode_kombu(
                    r#"{"method": 3}"#,
                    serde_json::json!({}),
                    2,
                    EXCHANGE,
                    "",
                    "t",
                ),
                "Shape",
            ),
            (
                envelope::encode_kombu(
                    r#"{"method": "ping", "arguments": [1]}"#,
                    serde_json::json!({}),
                    2,
                    EXCHANGE,
                    "",
                    "t",
                ),
                "Shape",
            ),
            (
                envelope::encode_kombu(
                    r#"{"method": "ping", "reply_to": "x"}"#,
                    serde_json::json!({}),
                    2,
                    EXCHANGE,
                    "",
                    "t",
                ),
                "Shape",
            ),
            (
                envelope::encode_kombu(
                    r#"{"method": "ping", "reply_to": {"exchange": "x"}}"#,
                    serde_json::json!({}),
                    2,
                    EXCHANGE,
                    "",
                    "t",
                ),
                "Shape",
            ),
            (
                envelope::encode_kombu(
                    r#"{"method": "ping", "destination": 5}"#,
                    serde_json::json!({}),
                    2,
                    EXCHANGE,
                    "",
                    "t",
                ),
                "Shape",
            ),
        ];
        for (raw, kind) in cases {
            let err = Request::decode(&raw).expect_err(&raw);
            assert!(format!("{err:?}").contains(kind), "{raw}: {err:?}");
        }
        let pickle = raw("pidbox-request-ping.json")
            .replace("application/json", "application/x-python-serialize");
        assert!(matches!(
            Request::decode(&pickle),
            Err(PidboxError::ContentType(_))
        ));
    }

    #[test]
    fn bad_headers_are_ignored() {
        let raw = envelope::encode_kombu(
            r#"{"method": "ping"}"#,
            serde_json::json!({"clock": "x", "expires": [1]}),
            2,
            EXCHANGE,
            "",
            "t",
        );
        let r = Request::decode(&raw).unwrap();
        assert_eq!((r.clock, r.expires), (0, None));
    }

    #[test]
    fn unknown_method_error_reply_is_celerys() {
        let reply_to = ReplyTo {
            exchange: REPLY_EXCHANGE.into(),
            routing_key: "k".into(),
        };
        let value = error_reply("KeyError('nosuch')");
        let raw = Reply {
            node_name: "w1@vm",
            value: &value,
            ticket: "t",
            clock: 3,
            reply_to: &reply_to,
            delivery_tag: "d",
        }
        .encode();
        let env = Envelope::parse(&raw).unwrap();
        assert_eq!(
            String::from_utf8(env.body).unwrap(),
            r#"{"w1@vm": {"error": "KeyError('nosuch')"}}"#
        );
    }
}

/// Property tests: whatever arrives on the pidbox channel, `decode` returns
/// a request or an error and never panics; `matches` never panics on any
/// pattern; a request we encode decodes to itself.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A body with the request's keys, each of any type.
    fn request_shaped() -> impl Strategy<Value = Value> {
        let field = || prop_oneof![json(), "[a-z*?\\[\\]!@.]{0,8}".prop_map(Value::String)];
        (field(), field(), field(), field(), field(), field(), field()).prop_map(
            |(method, arguments, destination, pattern, matcher, ticket, reply_to)| {
                serde_json::json!({
                    "method": method, "arguments": arguments, "destination": destination,
                    "pattern": pattern, "matcher": matcher, "ticket": ticket, "reply_to": reply_to,
                })
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn random_text_never_panics(raw in any::<String>()) {
            let _ = Request::decode(&raw);
        }

        #[test]
        fn any_json_envelope_never_panics(doc in json()) {
            let _ = Request::decode(&doc.to_string());
        }

        #[test]
        fn request_shaped_bodies_decode_or_fail_and_match_without_panic(
            body in request_shaped(),
            node in "[a-z0-9@.\\[\\]*]{0,10}",
            base64 in any::<bool>(),
        ) {
            let text = body.to_string();
            let raw = if base64 {
                envelope::encode_kombu(&text, serde_json::json!({"clock": 1}), 2, EXCHANGE, "", "t")
            } else {
                serde_json::json!({"body": text, "properties": {}}).to_string()
            };
            if let Ok(req) = Request::decode(&raw) {
                let _ = req.matches(&node);
            }
        }

        #[test]
        fn encoded_requests_decode_to_themselves(
            method in "[a-z_]{1,12}",
            args in prop::collection::vec(("[a-z]{1,5}", leaf()), 0..4),
            destination in prop::option::of(prop::collection::vec("[a-z0-9@]{1,8}", 0..3)),
            call in any::<bool>(),
            clock in 0u64..1_000_000,
        ) {
            let arguments: Map<String, Value> = args.into_iter().collect();
            let encoded = NewRequest {
                method: &method,
                arguments: &arguments,
                destination: destination.as_deref(),
                reply: call.then_some(("ticket", "oid")),
                clock,
                expires: 0.0,
                delivery_tag: "tag",
            }.encode();
            let req = Request::decode(&encoded).expect("our own request decodes");
            prop_assert_eq!(req.wants_reply(), call);
            prop_assert_eq!(req.method, method);
            prop_assert_eq!(req.arguments, arguments);
            prop_assert_eq!(req.clock, clock);
            prop_assert_eq!(req.destination, destination.map(Destination::Nodes));
        }
    }
}
