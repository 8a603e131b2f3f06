//! Redis Sentinel, as kombu's `sentinel://` transport and Celery's sentinel
//! result backend configure it: which master the sentinels name now.
//!
//! The URL is kombu's: `sentinel://[[user]:password@]host[:port][/db]`, one
//! per sentinel, joined by `;` (port 26379 by default). As in kombu and
//! Celery, the database and the master's credentials come from the first
//! entry. The transport options `master_name` and `sentinel_kwargs` (the
//! sentinels' own `password` / `username`) are carried in the URL's query as
//! `master_name`, `sentinel_password` and `sentinel_username`: the app layer
//! folds `broker_transport_options` / `result_backend_transport_options` in
//! (`with_options`), and a bare `-b` URL (e.g. for `rmulti call`) may give
//! them directly. `for_celery` strips them again before a URL reaches a
//! Python host, whose Celery has the options in its own settings.
//!
//! Resolution asks each sentinel in turn `SENTINEL get-master-addr-by-name`
//! with short timeouts; `connection::connect` then connects to that address
//! and checks `ROLE` is master, asking again while a failover is under way.
//! A connection error or a READONLY reply makes the caller reconnect, which
//! resolves again: that is how a node follows a new master.

use std::collections::BTreeMap;
use std::time::Duration;

use super::url::{masked, UrlError};

pub const DEFAULT_PORT: u16 = 26379;
/// Timeouts for one sentinel: a dead one must not delay asking the next.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(1000);

/// The query keys rmulti reads from a sentinel URL (its transport options).
const OPTION_KEYS: &[&str] = &["master_name", "sentinel_password", "sentinel_username"];

/// A parsed `sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinels {
    /// In the order given; each is asked in turn.
    pub hosts: Vec<(String, u16)>,
    pub master_name: String,
    /// The master's database and credentials (from the first entry).
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sentinels' own credentials (`sentinel_kwargs`).
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    /// No sentinel named a master: each one's answer, masked URL first.
    #[error("no sentinel of {url} names a master {master:?}: {tried}")]
    NoMaster {
        url: String,
        master: String,
        tried: String,
    },
    /// The named master answered as a replica, each time it was asked.
    #[error("{addr}, the master the sentinels of {url} name, is not a master yet (a failover is under way)")]
    NotMaster { url: String, addr: String },
}

/// True for kombu's sentinel scheme (any entry of a `;` list starts with it).
pub fn is_sentinel(url: &str) -> bool {
    url.trim_start()
        .get(..11)
        .is_some_and(|s| s.eq_ignore_ascii_case("sentinel://"))
}

/// Parses a `sentinel://...;sentinel://...` URL (see the module doc).
pub fn parse(url: &str) -> Result<Sentinels, UrlError> {
    let fail = |reason: String| UrlError {
        url: masked(url),
        reason,
    };
    let mut hosts = Vec::new();
    let mut first: Option<(i64, Option<String>, Option<String>)> = None;
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    for chunk in url.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        let parsed = url::Url::parse(chunk).map_err(|e| fail(format!("{chunk:?}: {e}")))?;
        if parsed.scheme() != "sentinel" {
            return Err(fail(format!(
                "every entry of a sentinel URL starts with sentinel://, not {}://",
                parsed.scheme()
            )));
        }
        for (k, v) in parsed.query_pairs() {
            if !OPTION_KEYS.contains(&k.as_ref()) {
                return Err(fail(format!(
                    "query option {k} is not supported in a sentinel URL (rmulti reads {})",
                    OPTION_KEYS.join(", ")
                )));
            }
            options.insert(k.into_owned(), v.into_owned());
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => super::url::DEFAULT_HOST.to_string(),
        };
        hosts.push((host, parsed.port().unwrap_or(DEFAULT_PORT)));
        if first.is_none() {
            let text = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| fail("not valid UTF-8 once percent-decoded".into()))
            };
            let username = Some(parsed.username())
                .filter(|u| !u.is_empty())
                .map(text)
                .transpose()?;
            let password = parsed.password().map(text).transpose()?;
            let db = parse_db(parsed.path()).map_err(&fail)?;
            first = Some((db, username, password));
        }
    }
    let Some((db, username, password)) = first else {
        return Err(fail("no sentinel given".into()));
    };
    let Some(master_name) = options.remove("master_name").filter(|m| !m.is_empty()) else {
        return Err(fail(
            "the master_name transport option must be specified (broker_transport_options / result_backend_transport_options, or ?master_name= in the URL)".into(),
        ));
    };
    Ok(Sentinels {
        hosts,
        master_name,
        db,
        username,
        password,
        sentinel_username: options.remove("sentinel_username"),
        sentinel_password: options.remove("sentinel_password"),
    })
}

fn parse_db(path: &str) -> Result<i64, String> {
    let t = path.trim_matches('/');
    if t.is_empty() {
        return Ok(0);
    }
    t.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("the database is a number from 0, not {t:?}"))
}

/// The transport options of a sentinel URL, as Celery names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub master_name: Option<String>,
    /// `sentinel_kwargs`: rmulti reads `password` and `username`.
    pub sentinel_kwargs: BTreeMap<String, String>,
}

impl Options {
    pub fn is_empty(&self) -> bool {
        self.master_name.is_none() && self.sentinel_kwargs.is_empty()
    }
}

/// `url` with `options` folded into its query (what the URL already says
/// wins). Any URL that is not a sentinel one is returned unchanged.
pub fn with_options(url: &str, options: &Options) -> String {
    if !is_sentinel(url) || options.is_empty() {
        return url.to_string();
    }
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(m) = &options.master_name {
        pairs.push(("master_name", m));
    }
    for (key, query_key) in [
        ("password", "sentinel_password"),
        ("username", "sentinel_username"),
    ] {
        if let Some(v) = options.sentinel_kwargs.get(key) {
            pairs.push((query_key, v));
        }
    }
    let present = |key: &str| {
        url.split(';').any(|chunk| {
            chunk.split_once('?').is_some_and(|(_, q)| {
                url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == key)
            })
        })
    };
    let mut added = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.into_iter().filter(|(k, _)| !present(k)) {
        added.append_pair(k, v);
    }
    let added = added.finish();
    if added.is_empty() {
        return url.to_string();
    }
    // The options go on the last entry, where a reader of the URL looks.
    let sep = match url.rsplit(';').next() {
        Some(last) if last.contains('?') => '&',
        _ => '?',
    };
    format!("{url}{sep}{added}")
}

/// `url` without rmulti's query options, as Celery/kombu accept it (they take
/// `master_name` and `sentinel_kwargs` from transport options only).
pub fn for_celery(url: &str) -> String {
    if !is_sentinel(url) {
        return url.to_string();
    }
    url.split(';')
        .map(|chunk| match chunk.split_once('?') {
            None => chunk.to_string(),
            Some((base, q)) => {
                let kept: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| !OPTION_KEYS.contains(&k.as_ref()))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    let q = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(kept)
                        .finish();
                    format!("{base}?{q}")
                }
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The master's address as the first sentinel that answers names it.
pub fn master_addr(s: &Sentinels, shown_url: &str) -> Result<(String, u16), SentinelError> {
    let mut tried = Vec::new();
    for (host, port) in &s.hosts {
        match ask(s, host, *port) {
            Ok(Some(addr)) => return Ok(addr),
            Ok(None) => tried.push(format!("{host}:{port} does not know it")),
            Err(e) => tried.push(format!("{host}:{port}: {e}")),
        }
    }
    Err(SentinelError::NoMaster {
        url: shown_url.to_string(),
        master: s.master_name.clone(),
        tried: tried.join("; "),
    })
}

/// One sentinel's answer: `None` when it knows no such master.
fn ask(s: &Sentinels, host: &str, port: u16) -> redis::RedisResult<Option<(String, u16)>> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(host.to_string(), port),
        redis: redis::RedisConnectionInfo::default(),
    };
    let mut con = redis::Client::open(info)?.get_connection_with_timeout(SENTINEL_TIMEOUT)?;
    con.set_read_timeout(Some(SENTINEL_TIMEOUT))?;
    con.set_write_timeout(Some(SENTINEL_TIMEOUT))?;
    if let Some(password) = &s.sentinel_password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &s.sentinel_username {
            auth.arg(user);
        }
        auth.arg(password).query::<()>(&mut con)?;
    }
    let reply: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(&s.master_name)
        .query(&mut con)?;
    Ok(reply.and_then(|(h, p)| p.parse().ok().map(|p| (h, p))))
}

/// True when `ROLE` says this connection's server is a master.
pub fn is_master(con: &mut redis::Connection) -> redis::RedisResult<bool> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(con)?;
    let first = role.first().map(redis::from_redis_value::<String>);
    Ok(matches!(first, Some(Ok(r)) if r == "master"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_urls() {
        let s = parse("sentinel://:pw@h1:26380/2;sentinel://h2;sentinel://:x@10.0.0.3:1/5?master_name=mymaster").unwrap();
        assert_eq!(
            s.hosts,
            vec![
                ("h1".to_string(), 26380),
                ("h2".to_string(), DEFAULT_PORT),
                ("10.0.0.3".to_string(), 1)
            ]
        );
        assert_eq!(s.master_name, "mymaster");
        // db and credentials from the first entry, as kombu and Celery
        assert_eq!(s.db, 2);
        assert_eq!(s.password.as_deref(), Some("pw"));
        assert_eq!(s.username, None);
        assert_eq!(s.sentinel_password, None);

        let s = parse("sentinel://u:p%40ss@h?master_name=m&sentinel_password=sp").unwrap();
        assert_eq!(s.username.as_deref(), Some("u"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert_eq!(s.sentinel_password.as_deref(), Some("sp"));
        assert_eq!(s.db, 0);
    }

    #[test]
    fn bad_urls() {
        let e = parse("sentinel://:secret@h1;sentinel://h2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("master_name") && !e.contains("secret"), "{e}");
        assert!(parse("sentinel://h/x?master_name=m").is_err());
        assert!(parse("sentinel://h;redis://h?master_name=m").is_err());
        assert!(parse("sentinel://h?master_name=m&socket_timeout=1").is_err());
        assert!(parse(";").is_err());
    }

    #[test]
    fn exit_codes() {
        use crate::broker::connection::validate_url;
        use crate::broker::BrokerError;
        // No master_name: a configuration error, before any connection.
        let bad = validate_url("sentinel://h1;sentinel://h2").unwrap_err();
        assert_eq!(bad.exit_code(), crate::exit::CONFIG);
        // No sentinel answered: Redis unreachable, a runtime failure.
        let down = BrokerError::from(SentinelError::NoMaster {
            url: "sentinel://h1".into(),
            master: "m".into(),
            tried: "h1:26379: refused".into(),
        });
        assert_eq!(down.exit_code(), crate::exit::FAILURE);
        assert!(down.is_connection_problem());
    }

    #[test]
    fn options_fold_in_and_strip_out() {
        let opts = Options {
            master_name: Some("mymaster".into()),
            sentinel_kwargs: [("password".to_string(), "s p".to_string())].into(),
        };
        let url = with_options("sentinel://:pw@h1:1/3;sentinel://h2:2", &opts);
        assert_eq!(
            url,
            "sentinel://:pw@h1:1/3;sentinel://h2:2?master_name=mymaster&sentinel_password=s+p"
        );
        let s = parse(&url).unwrap();
        assert_eq!(s.master_name, "mymaster");
        assert_eq!(s.sentinel_password.as_deref(), Some("s p"));
        assert_eq!(for_celery(&url), "sentinel://:pw@h1:1/3;sentinel://h2:2");
        // what the URL says wins
        let url = with_options("sentinel://h?master_name=other", &opts);
        assert_eq!(url, "sentinel://h?master_name=other&sentinel_password=s+p");
        assert_eq!(with_options("redis://h/0", &opts), "redis://h/0");
        assert_eq!(for_celery("redis://h/0?x=1"), "redis://h/0?x=1");
        assert!(is_sentinel("SENTINEL://h") && !is_sentinel("redis://h"));
    }

    #[test]
    fn masked_hides_every_password() {
        assert_eq!(
            masked("sentinel://:a@h1:1/0;sentinel://:b@h2:2/0?master_name=m&sentinel_password=c"),
            "sentinel://:**@h1:1/0;sentinel://:**@h2:2/0?master_name=m&sentinel_password=**"
        );
    }
}
