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
