//! Redis URLs as Celery and kombu accept them, for the broker and the result
//! backend, parsed into where to connect and how:
//!
//! - `redis://[user[:password]@]host[:port][/db]` (kombu: host 127.0.0.1, port 6379, db 0);
//! - `rediss://...` (TLS) with Celery's query options `ssl_cert_reqs`
//!   (`required`/`CERT_REQUIRED`, `optional`/`CERT_OPTIONAL`, `none`/`CERT_NONE`),
//!   `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile` (percent-encoded paths);
//! - `redis+socket:///path/redis.sock[?virtual_host=N]` (kombu) and
//!   `socket:///path/redis.sock[?virtual_host=N]` (Celery's result backend);
//! - `unix:///path/redis.sock[?db=N][&password=P]` (redis-py's form).
//!
//! (`sentinel://` URLs are `sentinel`'s; `connection` sends them there.)
//!
//! And the masked form of any of them for banners, logs and errors: the
//! password is always `**` (`redis://:**@127.0.0.1:6379/0`, as Celery prints it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use redis::{ConnectionAddr, ConnectionInfo, RedisConnectionInfo};

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 6379;

/// Query options that change what is trusted: never silently ignored.
const SSL_KEYS: &[&str] = &[
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
];

#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL {url}: {reason}")]
pub struct UrlError {
    /// Masked.
    pub url: String,
    pub reason: String,
}

/// How the server's certificate is checked (Celery's `ssl_cert_reqs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertReqs {
    Required,
    /// Python's client-side `CERT_OPTIONAL` verifies like `CERT_REQUIRED`.
    Optional,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert_reqs: CertReqs,
    /// True when the URL gave no `ssl_*` option at all (kombu then does not
    /// verify, with a warning).
    pub defaulted: bool,
    pub ca_certs: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

impl Tls {
    /// Verify the server's certificate and name?
    pub fn verifies(&self) -> bool {
        self.cert_reqs != CertReqs::None
    }

    /// What Celery/kombu warn about this setting, if anything.
    pub fn warning(&self) -> Option<&'static str> {
        if self.defaulted {
            return Some(
                "Secure redis scheme specified (rediss) with no ssl options, defaulting to insecure SSL behaviour.",
            );
        }
        match self.cert_reqs {
            CertReqs::Required => None,
            CertReqs::Optional => Some(
                "Setting ssl_cert_reqs=CERT_OPTIONAL when connecting to redis means that celery might not validate the identity of the redis broker when connecting. This leaves you vulnerable to man in the middle attacks.",
            ),
            CertReqs::None => Some(
                "Setting ssl_cert_reqs=CERT_NONE when connecting to redis means that celery will not validate the identity of the redis broker when connecting. This leaves you vulnerable to man in the middle attacks.",
            ),
        }
    }
}

/// A parsed Redis URL: where to connect, with which credentials and database,
/// and over TLS or not. (`ConnectionInfo`'s TLS address carries no options;
/// `tls` does.)
#[derive(Debug, Clone)]
pub struct Target {
    pub info: ConnectionInfo,
    pub tls: Option<Tls>,
}

impl Target {
    pub fn db(&self) -> i64 {
        self.info.redis.db
    }
}

/// Whether `url` names a Redis server in a form rmulti connects to itself
/// (sentinel included). Any other result backend (`django-db`,
/// `db+sqlite:///...`) is only a Python app's to write: its hosts store the
/// outcomes (`AppConfig::results_in_python`).
pub fn is_redis(url: &str) -> bool {
    if super::sentinel::is_sentinel(url) {
        return true;
    }
    let scheme = url
        .trim_start()
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    matches!(
        scheme.as_deref(),
        Some("redis" | "rediss" | "redis+socket" | "socket" | "unix" | "redis+unix")
    )
}

/// Parses `url` (see the module doc for the forms).
pub fn parse(url: &str) -> Result<Target, UrlError> {
    let fail = |reason: String| UrlError {
        url: masked(url),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| fail(e.to_string()))?;
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in parsed.query_pairs() {
        query.insert(k.into_owned(), v.into_owned());
    }
    let username = decoded(parsed.username()).map_err(&fail)?;
    let password = parsed
        .password()
        .map(decoded)
        .transpose()
        .map_err(&fail)?
        .flatten();
    if let Some(key) = query
        .keys()
        .find(|k| k.starts_with("ssl_") && !SSL_KEYS.contains(&k.as_str()))
    {
        return Err(fail(format!(
            "{key} is not supported (rmulti reads {})",
            SSL_KEYS.join(", ")
        )));
    }
    let scheme = parsed.scheme();
    let socket = match scheme {
        "redis" | "rediss" => None,
        "redis+socket" | "socket" => Some("virtual_host"),
        "unix" | "redis+unix" => Some("db"),
        other => {
            return Err(fail(format!(
                "unsupported scheme {other:?} (use redis://, rediss://, redis+socket:// or unix://)"
            )))
        }
    };
    if scheme != "rediss" {
        if let Some(key) = SSL_KEYS.iter().find(|k| query.contains_key(**k)) {
            return Err(fail(format!(
                "{key} is a TLS option, but the scheme is {scheme}://; a Redis TLS URL uses rediss://"
            )));
        }
    }
    let (addr, db, username, password) = match socket {
        Some(db_key) => {
            let path = percent_decoded(parsed.path()).map_err(&fail)?;
            if path.is_empty() || path == "/" {
                return Err(fail(
                    "no socket path (e.g. unix:///run/redis/redis.sock)".into(),
                ));
            }
            // kombu takes the db of a socket URL from `virtual_host` only; a
            // `db` it would ignore is an error here, not a different database.
            let other = if db_key == "db" { "virtual_host" } else { "db" };
            if query.contains_key(other) {
                return Err(fail(format!(
                    "give the database of a {scheme}:// URL as ?{db_key}=N, not ?{other}="
                )));
            }
            let db = query.get(db_key).map(String::as_str).unwrap_or("");
            let user = username.or_else(|| query.get("username").cloned());
            let pass = password.or_else(|| query.get("password").cloned());
            (
                ConnectionAddr::Unix(PathBuf::from(path)),
                db.to_string(),
                user,
                pass,
            )
        }
        None => {
            if query.contains_key("db") || query.contains_key("virtual_host") {
                return Err(fail(
                    "give the database in the path (redis://host:port/N), not in the query".into(),
                ));
            }
            let host = match parsed.host() {
                Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
                Some(url::Host::Ipv4(ip)) => ip.to_string(),
                Some(url::Host::Ipv6(ip)) => ip.to_string(),
                _ => DEFAULT_HOST.to_string(),
            };
            let port = parsed.port().unwrap_or(DEFAULT_PORT);
            let addr = if scheme == "rediss" {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            };
            (addr, parsed.path().to_string(), username, password)
        }
    };
    let db = parse_db(&db).map_err(&fail)?;
    let tls = (scheme == "rediss")
        .then(|| parse_tls(&query))
        .transpose()
        .map_err(&fail)?;
    let addr = match (addr, &tls) {
        (ConnectionAddr::TcpTls { host, port, .. }, Some(t)) => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: !t.verifies(),
            tls_params: None,
        },
        (addr, _) => addr,
    };
    Ok(Target {
        info: info(addr, db, username, password),
        tls,
    })
}

pub(crate) fn info(
    addr: ConnectionAddr,
    db: i64,
    username: Option<String>,
    password: Option<String>,
) -> ConnectionInfo {
    ConnectionInfo {
        addr,
        redis: RedisConnectionInfo {
            db,
            username,
            password,
            ..Default::default()
        },
    }
}

fn decoded(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    percent_decoded(text).map(Some)
}

fn percent_decoded(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "not valid UTF-8 once percent-decoded".to_string())
}

/// kombu's rule: empty or `/` is 0, a leading `/` is dropped, else an integer.
fn parse_db(text: &str) -> Result<i64, String> {
    let t = text.strip_prefix('/').unwrap_or(text);
    let t = t.strip_suffix('/').unwrap_or(t);
    if t.is_empty() {
        return Ok(0);
    }
    t.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("the database is a number from 0, not {t:?}"))
}

fn parse_tls(query: &BTreeMap<String, String>) -> Result<Tls, String> {
    let defaulted = !SSL_KEYS.iter().any(|k| query.contains_key(*k));
    let cert_reqs = match query.get("ssl_cert_reqs").map(String::as_str) {
        // kombu: no ssl options → CERT_NONE (with a warning); some options
        // but no ssl_cert_reqs → redis-py's default, required.
        None if defaulted => CertReqs::None,
        None => CertReqs::Required,
        Some("required" | "CERT_REQUIRED") => CertReqs::Required,
        Some("optional" | "CERT_OPTIONAL") => CertReqs::Optional,
        Some("none" | "CERT_NONE") => CertReqs::None,
        Some(other) => {
            return Err(format!(
                "ssl_cert_reqs={other:?}: use required, optional or none (or CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE)"
            ))
        }
    };
    if let Some(v) = query.get("ssl_check_hostname") {
        match v.to_ascii_lowercase().as_str() {
            "true" => {}
            "false" => {
                return Err("ssl_check_hostname=false is not supported: the host name is checked whenever the certificate is (use ssl_cert_reqs=none to check neither)".into())
            }
            other => return Err(format!("ssl_check_hostname={other:?}: use true")),
        }
    }
    let path = |key: &str| query.get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    let tls = Tls {
        cert_reqs,
        defaulted,
        ca_certs: path("ssl_ca_certs"),
        certfile: path("ssl_certfile"),
        keyfile: path("ssl_keyfile"),
    };
    if tls.certfile.is_some() != tls.keyfile.is_some() {
        return Err(
            "ssl_certfile and ssl_keyfile go together (the client certificate and its key)".into(),
        );
    }
    Ok(tls)
}

/// `url` with Celery's `broker_use_ssl` / `redis_backend_use_ssl` options
/// added as query options (those the URL already has win, as in Celery). As
/// in kombu, such options make even a `redis://` URL a TLS one. Only TCP
/// URLs take them; anything else is returned unchanged.
pub fn with_ssl_options(url: &str, options: &BTreeMap<String, String>) -> String {
    // An empty dict is false to kombu: no TLS.
    if options.is_empty() {
        return url.to_string();
    }
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return url.to_string();
    };
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, q.to_string()),
        None => (rest, String::new()),
    };
    let present: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let mut pairs = url::form_urlencoded::Serializer::new(query);
    for (k, v) in options {
        if !present.contains(k) {
            pairs.append_pair(k, v);
        }
    }
    let query = pairs.finish();
    if query.is_empty() {
        format!("rediss://{base}")
    } else {
        format!("rediss://{base}?{query}")
    }
}

/// The URL with any password replaced by `**`, as Celery prints it
/// (`redis://:**@127.0.0.1:6379/0`); a `password=` (or `sentinel_password=`)
/// query value too, and each entry of a `sentinel://` list.
pub fn masked(url: &str) -> String {
    // A sentinel URL is a `;` list of URLs, each with its own password.
    if url.contains(';') && super::sentinel::is_sentinel(url) {
        return url.split(';').map(masked).collect::<Vec<_>>().join(";");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The authority ends at the first `/` after the last `@` (a password
    // may hold a `/` only percent-encoded, but be safe with a raw one).
    let (authority, path) = match before_query.rfind('@') {
        Some(at) => match before_query[at..].find('/') {
            Some(i) => before_query.split_at(at + i),
            None => (before_query, ""),
        },
        None => match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        },
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:**@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.ends_with("password") => format!("{k}=**"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// `Some((db of b, db of a))` when two URLs name the same server with the
/// same credentials and TLS options (only the database may differ), so one
/// connection and one script can write to both.
pub fn same_server(a: &str, b: &str) -> Option<(i64, i64)> {
    let (ta, tb) = (parse(a).ok()?, parse(b).ok()?);
    let same = ta.info.addr == tb.info.addr
        && ta.info.redis.username == tb.info.redis.username
        && ta.info.redis.password == tb.info.redis.password
        && ta.tls == tb.tls;
    same.then_some((tb.db(), ta.db()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(t: &Target) -> (String, u16) {
        match &t.info.addr {
            ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn masks_password_only() {
        assert_eq!(masked("redis://:secret@h:1/0"), "redis://:**@h:1/0");
        assert_eq!(masked("redis://user:secret@h:1/0"), "redis://user:**@h:1/0");
        assert_eq!(masked("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(masked("redis://user@h:1/0"), "redis://user@h:1/0");
        assert_eq!(masked("redis://:se/cr@et@h:1/0"), "redis://:**@h:1/0");
        assert_eq!(
            masked("rediss://:p@h:1/0?ssl_cert_reqs=required"),
            "rediss://:**@h:1/0?ssl_cert_reqs=required"
        );
        assert_eq!(
            masked("unix:///run/r.sock?db=2&password=secret"),
            "unix:///run/r.sock?db=2&password=**"
        );
    }

    #[test]
    fn tcp_urls_as_kombu_reads_them() {
        let t = parse("redis://").unwrap();
        assert_eq!(tcp(&t), ("127.0.0.1".into(), 6379));
        assert_eq!(t.db(), 0);
        assert!(t.tls.is_none());
        let t = parse("redis://user:p%40ss@host.example:6380/3").unwrap();
        assert_eq!(tcp(&t), ("host.example".into(), 6380));
        assert_eq!(t.db(), 3);
        assert_eq!(t.info.redis.username.as_deref(), Some("user"));
        assert_eq!(t.info.redis.password.as_deref(), Some("p@ss"));
        let t = parse("redis://:pw@h/").unwrap();
        assert_eq!(t.info.redis.username, None);
        assert_eq!(t.info.redis.password.as_deref(), Some("pw"));
        assert_eq!(t.db(), 0);
        assert!(parse("redis://h/x").is_err());
        assert!(parse("redis://h/-1").is_err());
        assert!(parse("redis://h/1?db=2").is_err());
        assert!(parse("http://h/1").is_err());
    }

    #[test]
    fn tls_options() {
        let t = parse("rediss://h:1/0").unwrap();
        let tls = t.tls.unwrap();
        assert!(tls.defaulted && !tls.verifies());
        assert!(matches!(
            t.info.addr,
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));

        let t =
            parse("rediss://h:1/0?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fca.pem").unwrap();
        let tls = t.tls.unwrap();
        assert_eq!(tls.cert_reqs, CertReqs::Required);
        assert_eq!(tls.ca_certs, Some(PathBuf::from("/etc/ca.pem")));
        assert!(tls.warning().is_none());
        assert!(matches!(
            t.info.addr,
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));

        for (v, want) in [
            ("CERT_REQUIRED", CertReqs::Required),
            ("optional", CertReqs::Optional),
            ("CERT_OPTIONAL", CertReqs::Optional),
            ("none", CertReqs::None),
            ("CERT_NONE", CertReqs::None),
        ] {
            let tls = parse(&format!("rediss://h/0?ssl_cert_reqs={v}"))
                .unwrap()
                .tls
                .unwrap();
            assert_eq!(tls.cert_reqs, want, "{v}");
        }
        // some options but no ssl_cert_reqs: redis-py's default, required
        let tls = parse("rediss://h/0?ssl_ca_certs=/ca.pem")
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(tls.cert_reqs, CertReqs::Required);

        assert!(parse("rediss://h/0?ssl_cert_reqs=maybe").is_err());
        assert!(parse("rediss://h/0?ssl_certfile=/c.pem").is_err());
        assert!(parse("rediss://h/0?ssl_check_hostname=false").is_err());
        assert!(parse("rediss://h/0?ssl_ca_path=%2Fetc").is_err());
        assert!(parse("rediss://h/0?socket_timeout=5").is_ok());
        let e = parse("redis://:secret@h/0?ssl_cert_reqs=none")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rediss://") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn redis_urls_are_told_from_python_backends() {
        for url in [
            "redis://h/1",
            "rediss://h",
            "unix:///s",
            "redis+socket:///s",
            "sentinel://h:26379",
        ] {
            assert!(is_redis(url), "{url}");
        }
        for url in [
            "django-db",
            "db+sqlite:///r.db",
            "rpc://",
            "cache+memcached://h/",
            "",
        ] {
            assert!(!is_redis(url), "{url}");
        }
    }

    #[test]
    fn same_server_only_when_all_but_the_db_match() {
        assert_eq!(same_server("redis://h:1/0", "redis://h:1/1"), Some((1, 0)));
        assert_eq!(same_server("redis://h:1", "redis://h:1/0"), Some((0, 0)));
        assert_eq!(same_server("redis://h:1/0", "redis://h:2/0"), None);
        assert_eq!(same_server("redis://:a@h:1/0", "redis://:b@h:1/0"), None);
        assert_eq!(same_server("redis://h:1/0", "rediss://h:1/0"), None);
        assert_eq!(same_server("redis://h:1/x", "redis://h:1/0"), None);
        assert_eq!(
            same_server(
                "rediss://h:1/0?ssl_cert_reqs=none",
                "rediss://h:1/1?ssl_cert_reqs=required"
            ),
            None
        );
        assert_eq!(
            same_server("redis+socket:///s?virtual_host=2", "unix:///s?db=3"),
            Some((3, 2))
        );
    }

    #[test]
    fn celerys_ssl_dicts_become_query_options() {
        let opts: BTreeMap<String, String> = [
            ("ssl_cert_reqs", "required"),
            ("ssl_ca_certs", "/etc/ca.pem"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            with_ssl_options("redis://:pw@h:1/2", &opts),
            "rediss://:pw@h:1/2?ssl_ca_certs=%2Fetc%2Fca.pem&ssl_cert_reqs=required"
        );
        assert_eq!(
            with_ssl_options("rediss://h/0?ssl_cert_reqs=none", &opts),
            "rediss://h/0?ssl_cert_reqs=none&ssl_ca_certs=%2Fetc%2Fca.pem"
        );
        let t = parse(&with_ssl_options("rediss://h/0", &opts)).unwrap();
        assert_eq!(t.tls.unwrap().ca_certs, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(with_ssl_options("unix:///s.sock", &opts), "unix:///s.sock");
        assert_eq!(
            with_ssl_options("redis://h/0", &BTreeMap::new()),
            "redis://h/0"
        );
    }

    #[test]
    fn socket_urls() {
        let t = parse("redis+socket:///run/redis/r.sock?virtual_host=4").unwrap();
        assert!(
            matches!(&t.info.addr, ConnectionAddr::Unix(p) if p == &PathBuf::from("/run/redis/r.sock"))
        );
        assert_eq!(t.db(), 4);
        let t = parse("socket:///tmp/r%20s.sock").unwrap();
        assert!(
            matches!(&t.info.addr, ConnectionAddr::Unix(p) if p == &PathBuf::from("/tmp/r s.sock"))
        );
        assert_eq!(t.db(), 0);
        let t = parse("unix:///tmp/r.sock?db=2&password=pw").unwrap();
        assert_eq!(t.db(), 2);
        assert_eq!(t.info.redis.password.as_deref(), Some("pw"));
        assert!(parse("redis+socket:///tmp/r.sock?db=2").is_err());
        assert!(parse("unix:///tmp/r.sock?virtual_host=2").is_err());
        assert!(parse("unix://").is_err());
    }
}
