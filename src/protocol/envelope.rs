//! The kombu Redis envelope: the JSON document pushed on a queue list, with a
//! base64 (and optionally compressed) body, and the one size limit on what a
//! body may decode to (`MAX_BODY_BYTES`).

use base64::Engine;
use serde_json::{Map, Value};
use std::io::Read;

/// A parsed kombu envelope. `raw` is kept byte for byte: it is what goes back
/// into `unacked`, the ETA park and the dead-letter list.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub raw: String,
    pub content_type: String,
    pub content_encoding: String,
    pub headers: Map<String, Value>,
    pub properties: Map<String, Value>,
    /// The body after base64 and decompression: the serialized payload.
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    #[error("message is not a kombu envelope: {0}")]
    NotEnvelope(String),
    #[error("message body is not valid base64: {0}")]
    BadBase64(String),
    #[error("cannot decompress body ({compression}): {reason}")]
    BadCompression { compression: String, reason: String },
    #[error("unsupported compression {0:?}")]
    UnsupportedCompression(String),
    #[error("message body is larger than {} MiB once decoded (rmulti's limit for one message)", MAX_BODY_BYTES >> 20)]
    TooLarge,
}

/// The largest body (after base64 and decompression) a message may have.
///
/// Without a bound, a few kilobytes of zlib can make a pool child (or the
/// main process, which decodes held messages) allocate gigabytes. Redis
/// itself caps a message at 512 MB, but that is no per-process bound here:
/// a JSON body is parsed into values several times its size, in every child
/// at once. Celery's own advice is to pass references, not data, in task
/// arguments; 64 MiB leaves two orders of magnitude of room for that while
/// keeping a child's worst case in the hundreds of MiB.
pub const MAX_BODY_BYTES: usize = 64 << 20;

impl Envelope {
    /// Parses the envelope and decodes the body (base64 per
    /// `properties.body_encoding`, then `headers.compression`).
    pub fn parse(raw: &str) -> Result<Envelope, EnvelopeError> {
        let doc: Value =
            serde_json::from_str(raw).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let Value::Object(mut doc) = doc else {
            return Err(EnvelopeError::NotEnvelope(
                "top level is not a JSON object".into(),
            ));
        };
        let headers = take_object(&mut doc, "headers")?;
        let properties = take_object(&mut doc, "properties")?;
        // kombu defaults: a missing content type is treated as JSON, the only
        // serializer this crate speaks; the task layer still checks it.
        let content_type =
            take_string(&mut doc, "content-type")?.unwrap_or_else(|| "application/json".into());
        let content_encoding =
            take_string(&mut doc, "content-encoding")?.unwrap_or_else(|| "utf-8".into());
        let body_text = take_string(&mut doc, "body")?
            .ok_or_else(|| EnvelopeError::NotEnvelope("no \"body\" string".into()))?;
        let encoded = match properties.get("body_encoding").and_then(Value::as_str) {
            Some("base64") => decode_base64(&body_text)?,
            _ => body_text.into_bytes(),
        };
        let body = match headers.get("compression") {
            None | Some(Value::Null) => encoded,
            Some(Value::String(c)) => decompress(c, &encoded)?,
            Some(other) => return Err(EnvelopeError::UnsupportedCompression(other.to_string())),
        };
        Ok(Envelope {
            raw: raw.to_string(),
            content_type,
            content_encoding,
            headers,
            properties,
            body,
        })
    }

    /// `properties.delivery_tag`, if present.
    pub fn delivery_tag(&self) -> Option<&str> {
        self.properties.get("delivery_tag").and_then(Value::as_str)
    }
}

fn take_object(
    doc: &mut Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, EnvelopeError> {
    match doc.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(Value::Null) | None => Ok(Map::new()),
        Some(_) => Err(EnvelopeError::NotEnvelope(format!(
            "\"{key}\" is not an object"
        ))),
    }
}

fn take_string(doc: &mut Map<String, Value>, key: &str) -> Result<Option<String>, EnvelopeError> {
    match doc.remove(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(EnvelopeError::NotEnvelope(format!(
            "\"{key}\" is not a string"
        ))),
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, EnvelopeError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    // Python's b64decode discards whitespace; some producers drop padding.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    // Four characters carry three bytes (at most: the last group may carry fewer).
    if compact.len() / 4 * 3 > MAX_BODY_BYTES {
        return Err(EnvelopeError::TooLarge);
    }
    STANDARD
        .decode(&compact)
        .or_else(|e| {
            STANDARD_NO_PAD
                .decode(compact.trim_end_matches('='))
                .map_err(|_| e)
        })
        .map_err(|e| EnvelopeError::BadBase64(e.to_string()))
}

/// kombu's compression names: `application/x-gzip` is its *zlib* codec
/// (aliases `zlib`, `gzip`); a real gzip stream is accepted too by its magic.
fn decompress(compression: &str, data: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let bad = |e: std::io::Error| EnvelopeError::BadCompression {
        compression: compression.to_string(),
        reason: e.to_string(),
    };
    match compression.to_ascii_lowercase().as_str() {
        "application/x-gzip" | "application/gzip" | "application/zlib" | "zlib" | "gzip" => {
            let out = if data.starts_with(&[0x1f, 0x8b]) {
                read_capped(flate2::read::GzDecoder::new(data))
            } else {
                read_capped(flate2::read::ZlibDecoder::new(data))
            };
            match out {
                Ok(Some(body)) => Ok(body),
                Ok(None) => Err(EnvelopeError::TooLarge),
                Err(e) => Err(bad(e)),
            }
        }
        _ => Err(EnvelopeError::UnsupportedCompression(
            compression.to_string(),
        )),
    }
}

/// Reads `reader` to its end, or `None` as soon as it yields more than
/// `MAX_BODY_BYTES`: neither the excess nor room for it is ever allocated.
fn read_capped(mut reader: impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(Some(out)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let needed = out.len() + n;
        if needed > MAX_BODY_BYTES {
            return Ok(None);
        }
        if needed > out.capacity() {
            // Doubling as Vec does, but never past the limit.
            let target = (out.capacity() * 2).max(needed).min(MAX_BODY_BYTES);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Standard base64 with padding, as kombu writes bodies.
pub fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `properties.delivery_tag` of anything that is JSON, even when it is not a
/// usable envelope (no body, bad base64), so such a message can still be
/// removed from `unacked`.
pub fn delivery_tag_of(raw: &str) -> Option<String> {
    let value: Value = serde_json::from_str(raw).ok()?;
    value
        .get("properties")?
        .get("delivery_tag")?
        .as_str()
        .map(str::to_string)
}

/// An envelope as kombu's restore writes it back: `headers.redelivered` and
/// `properties.delivery_info.redelivered` set to true, in Python's JSON.
pub fn redelivered(mut envelope: Value) -> String {
    if let Some(h) = envelope.get_mut("headers").and_then(Value::as_object_mut) {
        h.insert("redelivered".into(), Value::Bool(true));
    }
    if let Some(di) = envelope
        .get_mut("properties")
        .and_then(|p| p.get_mut("delivery_info"))
        .and_then(Value::as_object_mut)
    {
        di.insert("redelivered".into(), Value::Bool(true));
    }
    crate::protocol::pyjson::to_string(&envelope)
}

/// A kombu envelope for a transient message (a pidbox request or reply, an
/// event), with Python's key order: `body` (base64 of `body_json`), content
/// type and encoding, `headers`, then `properties` with `delivery_info`
/// naming `exchange` and `routing_key`.
pub fn encode_kombu(
    body_json: &str,
    headers: Value,
    delivery_mode: u8,
    exchange: &str,
    routing_key: &str,
    delivery_tag: &str,
) -> String {
    use crate::protocol::pyjson::{write_json, write_json_str};
    use base64::Engine as _;
    // Written out in kombu's key order rather than built as a map: every
    // batch of task events goes through here.
    let mut out = String::with_capacity(body_json.len() * 4 / 3 + 320);
    out.push_str("{\"body\": \"");
    // Base64 is printable ASCII: nothing to escape.
    base64::engine::general_purpose::STANDARD.encode_string(body_json.as_bytes(), &mut out);
    out.push_str("\", \"content-encoding\": \"utf-8\", \"content-type\": \"application/json\", \"headers\": ");
    write_json(&mut out, &headers);
    out.push_str(", \"properties\": {\"delivery_mode\": ");
    out.push_str(&delivery_mode.to_string());
    out.push_str(", \"delivery_info\": {\"exchange\": ");
    write_json_str(&mut out, exchange);
    out.push_str(", \"routing_key\": ");
    write_json_str(&mut out, routing_key);
    out.push_str("}, \"priority\": 0, \"body_encoding\": \"base64\", \"delivery_tag\": ");
    write_json_str(&mut out, delivery_tag);
    out.push_str("}}");
    out
}

/// kombu's PUB/SUB channel for a fanout exchange on Redis (`fanout_prefix`
/// on, its default): `/{db}.<exchange>`, or `/{db}.<exchange>/<routing key>`
/// when the routing key is not empty. `global_keyprefix` goes in front.
pub fn fanout_channel(keyprefix: &str, db: i64, exchange: &str, routing_key: &str) -> String {
    if routing_key.is_empty() {
        format!("{keyprefix}/{db}.{exchange}")
    } else {
        format!("{keyprefix}/{db}.{exchange}/{routing_key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::test_fixture as fixture;

    #[test]
    fn parses_plain_envelope() {
        let f = fixture("task-v2-delay.json");
        let env = Envelope::parse(f["raw"].as_str().unwrap()).unwrap();
        assert_eq!(env.content_type, "application/json");
        assert_eq!(env.content_encoding, "utf-8");
        assert_eq!(
            env.delivery_tag(),
            Some("f93b33ab-1478-45f0-930b-7672ea6ec83c")
        );
        assert_eq!(env.headers["task"], "proj.add");
        let body: Value = serde_json::from_slice(&env.body).unwrap();
        assert_eq!(body, f["decoded"]["body"]);
        assert_eq!(env.raw, f["raw"].as_str().unwrap());
    }

    #[test]
    fn parses_zlib_body() {
        let f = fixture("task-v2-compressed-zlib.json");
        let env = Envelope::parse(f["raw"].as_str().unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&env.body).unwrap();
        assert_eq!(body, f["decoded"]["body"]);
    }

    #[test]
    fn gzip_stream_and_plain_body() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"[[1], {}, {}]").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(enc.finish().unwrap());
        let raw = format!(
            r#"{{"body": "{b64}", "headers": {{"compression": "gzip"}}, "properties": {{"body_encoding": "base64"}}}}"#
        );
        assert_eq!(Envelope::parse(&raw).unwrap().body, b"[[1], {}, {}]");
        let raw = r#"{"body": "[[1], {}, {}]", "content-type": "application/json", "properties": {}, "extra": 1}"#;
        assert_eq!(Envelope::parse(raw).unwrap().body, b"[[1], {}, {}]");
    }

    /// An envelope whose body is `body`, compressed with `compression`.
    fn compressed_envelope(body: &[u8], gzip: bool) -> String {
        use std::io::Write;
        let packed = if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(body).unwrap();
            enc.finish().unwrap()
        } else {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(body).unwrap();
            enc.finish().unwrap()
        };
        format!(
            r#"{{"body": "{}", "headers": {{"compression": "application/x-gzip", "id": "big-1", "task": "t"}}, "properties": {{"body_encoding": "base64"}}}}"#,
            base64_of(&packed)
        )
    }

    #[test]
    fn a_body_may_decompress_to_the_limit_and_not_a_byte_more() {
        let at_limit = vec![b' '; MAX_BODY_BYTES];
        let env = Envelope::parse(&compressed_envelope(&at_limit, false)).unwrap();
        assert_eq!(env.body.len(), MAX_BODY_BYTES);
        assert!(
            env.body.capacity() <= MAX_BODY_BYTES,
            "room beyond the limit"
        );

        let over = vec![b' '; MAX_BODY_BYTES + 1];
        for gzip in [false, true] {
            let raw = compressed_envelope(&over, gzip);
            // About 64 KiB on the wire for 64 MiB of body.
            assert!(raw.len() < 200 << 10, "{}", raw.len());
            assert_eq!(Envelope::parse(&raw).unwrap_err(), EnvelopeError::TooLarge);
        }
        assert_eq!(
            EnvelopeError::TooLarge.to_string(),
            "message body is larger than 64 MiB once decoded (rmulti's limit for one message)"
        );
    }

    #[test]
    fn a_base64_body_past_the_limit_is_refused_before_decoding() {
        let text = "A".repeat((MAX_BODY_BYTES / 3 + 1) * 4);
        let raw = format!(r#"{{"body": "{text}", "properties": {{"body_encoding": "base64"}}}}"#);
        assert_eq!(Envelope::parse(&raw).unwrap_err(), EnvelopeError::TooLarge);
        let text = "A".repeat(MAX_BODY_BYTES / 3 * 4);
        let raw = format!(r#"{{"body": "{text}", "properties": {{"body_encoding": "base64"}}}}"#);
        assert_eq!(
            Envelope::parse(&raw).unwrap().body.len(),
            MAX_BODY_BYTES / 3 * 3
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Envelope::parse("nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            Envelope::parse("[1]"),
            Err(EnvelopeError::NotEnvelope(_))
        ));
        assert!(matches!(
            Envelope::parse(r#"{"headers": {}}"#),
            Err(EnvelopeError::NotEnvelope(_))
        ));
        assert!(matches!(
            Envelope::parse(r#"{"body": "!!!", "properties": {"body_encoding": "base64"}}"#),
            Err(EnvelopeError::BadBase64(_))
        ));
        assert_eq!(
            Envelope::parse(r#"{"body": "", "headers": {"compression": "application/x-bz2"}}"#)
                .unwrap_err(),
            EnvelopeError::UnsupportedCompression("application/x-bz2".into())
        );
        assert!(matches!(
            Envelope::parse(
                r#"{"body": "AAAA", "headers": {"compression": "application/x-gzip"}, "properties": {"body_encoding": "base64"}}"#
            ),
            Err(EnvelopeError::BadCompression { .. })
        ));
    }
}
