//! The kombu Redis envelope: the JSON document pushed on a queue list, with a
//! base64 (and optionally compressed) body.

use serde_json::{Map, Value};

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
}

impl Envelope {
    /// Parses the envelope and decodes the body (base64 per
    /// `properties.body_encoding`, then `headers.compression`).
    pub fn parse(raw: &str) -> Result<Envelope, EnvelopeError> {
        let _ = raw;
        Err(EnvelopeError::NotEnvelope("not implemented".into()))
    }

    /// `properties.delivery_tag`, if present.
    pub fn delivery_tag(&self) -> Option<&str> {
        self.properties.get("delivery_tag").and_then(Value::as_str)
    }
}
