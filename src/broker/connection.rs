//! Opening Redis connections with connect, read and write timeouts, and the
//! error type of the broker module.

use std::time::Duration;

/// Longest a single blocking command may wait server-side (BLMOVE).
pub const BLOCK_TIMEOUT: Duration = Duration::from_millis(100);
/// Socket timeouts: generous next to BLOCK_TIMEOUT, short next to a shutdown.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid Redis URL {url}: {source}")]
    BadUrl {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
}

impl BrokerError {
    /// True when retrying on a new connection may help (server gone, timeout).
    pub fn is_connection_problem(&self) -> bool {
        match self {
            BrokerError::Connect { .. } => true,
            BrokerError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
            _ => false,
        }
    }
}

/// Connects to `url` (masked in errors) with rmulti's timeouts.
pub fn connect(url: &str) -> Result<redis::Connection, BrokerError> {
    let shown = super::url::masked(url);
    let client = redis::Client::open(url).map_err(|source| BrokerError::BadUrl {
        url: shown.clone(),
        source,
    })?;
    let con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|source| BrokerError::Connect {
            url: shown.clone(),
            source,
        })?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// Checks that `url` parses, without connecting.
pub fn validate_url(url: &str) -> Result<(), BrokerError> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|source| BrokerError::BadUrl {
            url: super::url::masked(url),
            source,
        })
}

/// A broker and a backend connection, opened on first use and re-opened after
/// `reset` (a pool child and the main process each own one).
pub struct Connections {
    broker_url: String,
    backend_url: String,
    broker: Option<redis::Connection>,
    backend: Option<redis::Connection>,
}

impl Connections {
    pub fn new(broker_url: &str, backend_url: &str) -> Connections {
        Connections {
            broker_url: broker_url.to_string(),
            backend_url: backend_url.to_string(),
            broker: None,
            backend: None,
        }
    }

    pub fn broker(&mut self) -> Result<&mut redis::Connection, BrokerError> {
        if self.broker.is_none() {
            self.broker = Some(connect(&self.broker_url)?);
        }
        self.broker
            .as_mut()
            .ok_or_else(|| BrokerError::Reply("no broker connection".into()))
    }

    pub fn backend(&mut self) -> Result<&mut redis::Connection, BrokerError> {
        if self.backend.is_none() {
            self.backend = Some(connect(&self.backend_url)?);
        }
        self.backend
            .as_mut()
            .ok_or_else(|| BrokerError::Reply("no backend connection".into()))
    }

    /// Drops both connections so the next use reconnects.
    pub fn reset(&mut self) {
        self.broker = None;
        self.backend = None;
    }
}
