//! Opening Redis connections (TCP, TLS, Unix socket; see `url`; or the
//! master a set of sentinels names, see `sentinel`) with connect, read and
//! write timeouts, and the error type of the broker module.

use std::time::Duration;

/// Longest a single blocking command may wait server-side (BLMOVE).
pub const BLOCK_TIMEOUT: Duration = Duration::from_millis(100);
/// Socket timeouts: generous next to BLOCK_TIMEOUT, short next to a shutdown.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    BadUrl(#[from] super::url::UrlError),
    #[error("cannot read {what} {path} of {url}: {source}")]
    TlsFile {
        what: &'static str,
        path: String,
        url: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    /// Redis refused the credentials (or none were given and it needs some).
    #[error("cannot connect to {url}: authentication failed: {source}")]
    Auth {
        url: String,
        source: redis::RedisError,
    },
    #[error(transparent)]
    Sentinel(#[from] super::sentinel::SentinelError),
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
}

impl BrokerError {
    /// A URL that cannot be used, or a TLS file named by one that cannot be
    /// read, is a configuration error; anything Redis said is a runtime
    /// failure. The same from every command.
    pub fn exit_code(&self) -> i32 {
        match self {
            // A sentinel URL without `master_name` is a `BadUrl` too.
            BrokerError::BadUrl(_) | BrokerError::TlsFile { .. } => crate::exit::CONFIG,
            // No sentinel answered, or none named a master: Redis is
            // unreachable, as for any failed connect.
            BrokerError::Sentinel(_) => crate::exit::FAILURE,
            _ => crate::exit::FAILURE,
        }
    }

    /// True when retrying on a new connection may help (server gone, timeout,
    /// credentials not accepted yet, restarted and still loading its data:
    /// `LOADING`), and when the server became a replica (`READONLY`: a
    /// Sentinel failover; the new connection follows the new master).
    pub fn is_connection_problem(&self) -> bool {
        match self {
            BrokerError::Connect { .. } | BrokerError::Auth { .. } => true,
            BrokerError::Sentinel(_) => true,
            BrokerError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.kind() == redis::ErrorKind::BusyLoadingError
                    || is_read_only(e)
            }
            _ => false,
        }
    }

    /// Redis refused a write because it is full (`maxmemory` with
    /// `noeviction`): it may take writes again once memory is freed.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, BrokerError::Redis(e) if e.code() == Some("OOM"))
    }

    /// True when Redis said the credentials are wrong: waiting will not help
    /// a node that is starting.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, BrokerError::Auth { .. })
    }
}

/// A write refused by a replica, sent directly or from inside a script.
fn is_read_only(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::ReadOnly || e.to_string().contains("READONLY")
}

fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// Connects to `url` (masked in errors) with rmulti's timeouts, and checks
/// with a PING that Redis accepts the credentials.
///
/// The redis crate sends AUTH and SELECT while it sets a connection up,
/// before any read timeout can be set, so a server that accepts TCP and
/// then stays silent would block for ever. The connection is therefore made
/// bare (no credentials, db 0, no CLIENT SETINFO), given its timeouts, and
/// only then authenticated and switched to its database here.
pub fn connect(url: &str) -> Result<redis::Connection, BrokerError> {
    if super::sentinel::is_sentinel(url) {
        return connect_sentinel(url);
    }
    open(super::url::parse(url)?, url)
}

/// How often a master the sentinels name may turn out to be a replica (a
/// failover under way) before the caller's back-off takes over.
const NOT_MASTER_TRIES: u32 = 3;

/// Connects to the master the sentinels of `url` name now, and checks it is
/// one (`ROLE`): right after a failover a sentinel may still name the old
/// master, which comes back as a replica.
fn connect_sentinel(url: &str) -> Result<redis::Connection, BrokerError> {
    use super::sentinel::{self, SentinelError};
    let shown = super::url::masked(url);
    let s = sentinel::parse(url)?;
    let mut addr = (String::new(), 0);
    for attempt in 0..NOT_MASTER_TRIES {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        addr = sentinel::master_addr(&s, &shown)?;
        let target = super::url::Target {
            info: super::url::info(
                redis::ConnectionAddr::Tcp(addr.0.clone(), addr.1),
                s.db,
                s.username.clone(),
                s.password.clone(),
            ),
            tls: None,
        };
        let mut con = open(target, url)?;
        if sentinel::is_master(&mut con)? {
            return Ok(con);
        }
    }
    Err(SentinelError::NotMaster {
        url: shown,
        addr: format!("{}:{}", addr.0, addr.1),
    }
    .into())
}

/// Connects to `target` (`url` only names it in errors; see `connect`).
fn open(mut target: super::url::Target, url: &str) -> Result<redis::Connection, BrokerError> {
    let shown = super::url::masked(url);
    let failed = |source: redis::RedisError| {
        if is_auth_error(&source) {
            BrokerError::Auth {
                url: shown.clone(),
                source,
            }
        } else {
            BrokerError::Connect {
                url: shown.clone(),
                source,
            }
        }
    };
    let setup = std::mem::take(&mut target.info.redis);
    let mut con = client_for(target, url)?
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(failed)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    if let Some(password) = &setup.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &setup.username {
            auth.arg(user);
        }
        auth.arg(password).query::<()>(&mut con).map_err(failed)?;
    }
    if setup.db != 0 {
        redis::cmd("SELECT")
            .arg(setup.db)
            .query::<()>(&mut con)
            .map_err(failed)?;
    }
    redis::cmd("PING").query::<()>(&mut con).map_err(failed)?;
    Ok(con)
}

/// A client for `url`, with its TLS files read (a missing file is an error
/// that names it).
fn client(url: &str) -> Result<redis::Client, BrokerError> {
    client_for(super::url::parse(url)?, url)
}

fn client_for(target: super::url::Target, url: &str) -> Result<redis::Client, BrokerError> {
    let shown = || super::url::masked(url);
    let Some(tls) = &target.tls else {
        return redis::Client::open(target.info).map_err(|source| BrokerError::Connect {
            url: shown(),
            source,
        });
    };
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| BrokerError::TlsFile {
            what,
            path: path.display().to_string(),
            url: shown(),
            source,
        })
    };
    let root_cert = match &tls.ca_certs {
        Some(p) => Some(read("ssl_ca_certs", p)?),
        None => None,
    };
    let client_tls = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("ssl_certfile", cert)?,
            client_key: read("ssl_keyfile", key)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        target.info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|source| BrokerError::Connect {
        url: shown(),
        source,
    })
}

/// Checks that `url` parses and its TLS files can be read, without connecting.
pub fn validate_url(url: &str) -> Result<(), BrokerError> {
    if super::sentinel::is_sentinel(url) {
        return super::sentinel::parse(url).map(|_| ()).map_err(Into::into);
    }
    client(url).map(|_| ())
}

/// A broker and a backend connection, opened on first use and re-opened after
/// `reset` (a pool child and the main process each own one).
pub struct Connections {
    broker_url: String,
    backend_url: String,
    broker: Option<redis::Connection>,
    backend: Option<redis::Connection>,
    /// Replies the broker connection owes for commands sent with
    /// `send_later` (see `piggyback`).
    owed: usize,
}

impl Connections {
    pub fn new(broker_url: &str, backend_url: &str) -> Connections {
        Connections {
            broker_url: broker_url.to_string(),
            backend_url: backend_url.to_string(),
            broker: None,
            backend: None,
            owed: 0,
        }
    }

    /// The broker connection, its owed replies read first.
    pub fn broker(&mut self) -> Result<&mut redis::Connection, BrokerError> {
        self.broker_owing()?;
        let owed = std::mem::take(&mut self.owed);
        let con = self
            .broker
            .as_mut()
            .ok_or_else(|| BrokerError::Reply("no broker connection".into()))?;
        for _ in 0..owed {
            // A PUBLISH reply: only whether the connection works matters.
            con.recv_response()?;
        }
        Ok(con)
    }

    fn broker_owing(&mut self) -> Result<&mut redis::Connection, BrokerError> {
        if self.broker.is_none() {
            self.owed = 0;
            self.broker = Some(connect(&self.broker_url)?);
        }
        self.broker
            .as_mut()
            .ok_or_else(|| BrokerError::Reply("no broker connection".into()))
    }

    /// Writes `cmd` on the broker connection now; its reply is read by the
    /// next use of the connection (see `piggyback`).
    pub fn send_later(&mut self, cmd: &redis::Cmd) -> Result<(), BrokerError> {
        self.broker_owing()?
            .send_packed_command(&cmd.get_packed_command())?;
        self.owed += 1;
        Ok(())
    }

    /// The broker connection for one request that reads the owed replies
    /// after writing its own.
    pub fn piggyback(&mut self) -> Result<super::piggyback::Piggyback<'_>, BrokerError> {
        self.broker_owing()?;
        let con = self
            .broker
            .as_mut()
            .ok_or_else(|| BrokerError::Reply("no broker connection".into()))?;
        Ok(super::piggyback::Piggyback::new(con, &mut self.owed))
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
        self.owed = 0;
    }
}
