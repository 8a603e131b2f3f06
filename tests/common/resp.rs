//! Just enough of the Redis protocol (RESP) for tests: a reply type and one
//! connection over `TcpStream` with timeouts on every read and write, so
//! no `redis-cli` is needed and a test never hangs on Redis.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// One Redis reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the nil bulk string (GET of a missing key).
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array (BLPOP timeout).
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// Integer replies (LLEN, TTL, EXISTS, LPUSH, ...). Panics otherwise.
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    /// A bulk or simple string as text; `None` for nil. Panics on other replies.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Resp::Bulk(None) => None,
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// The raw bytes of a bulk string; `None` for nil.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Resp::Bulk(b) => b.clone(),
            Resp::Simple(s) => Some(s.clone().into_bytes()),
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }

    /// An array of strings (LRANGE, KEYS, ZRANGE, HGETALL flat). Nil array = empty.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Resp::Array(Some(items)) => {
                items.iter().map(|r| r.text().unwrap_or_default()).collect()
            }
            Resp::Array(None) => Vec::new(),
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// HGETALL as a map.
    pub fn map(&self) -> HashMap<String, String> {
        let flat = self.strings();
        flat.chunks(2)
            .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
            .collect()
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Resp::Bulk(None) | Resp::Array(None))
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(s) => write!(f, "-{s}"),
            Resp::Int(i) => write!(f, ":{i}"),
            Resp::Bulk(None) => write!(f, "(nil)"),
            Resp::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Resp::Array(None) => write!(f, "(nil array)"),
            Resp::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("short RESP line {:?}", String::from_utf8_lossy(&line)),
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad {what}: {body:?}"),
        )
    };
    match line[0] {
        b'+' => Ok(Resp::Simple(body)),
        b'-' => Ok(Resp::Error(body)),
        b':' => body.parse().map(Resp::Int).map_err(|_| bad("integer")),
        b'$' => {
            let n: i64 = body.parse().map_err(|_| bad("bulk length"))?;
            if n < 0 {
                return Ok(Resp::Bulk(None));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Resp::Bulk(Some(buf)))
        }
        b'*' => {
            let n: i64 = body.parse().map_err(|_| bad("array length"))?;
            if n < 0 {
                return Ok(Resp::Array(None));
            }
            (0..n)
                .map(|_| read_reply(r))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Resp::Array(Some(v)))
        }
        _ => Err(bad("reply type")),
    }
}

/// One connection to a Redis server, for tests that send several commands
/// (or MULTI/EXEC). Every read has a timeout, so a test never hangs on Redis.
pub struct RedisConn {
    reader: BufReader<TcpStream>,
}

impl RedisConn {
    pub fn connect(port: u16, db: u32) -> std::io::Result<RedisConn> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut conn = RedisConn {
            reader: BufReader::new(stream),
        };
        if db != 0 {
            let r = conn.cmd_bytes(&[b"SELECT", db.to_string().as_bytes()])?;
            if r != Resp::Simple("OK".into()) {
                return Err(std::io::Error::other(format!("SELECT {db}: {r:?}")));
            }
        }
        Ok(conn)
    }

    /// Sends one command; arguments are binary-safe.
    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> std::io::Result<Resp> {
        self.reader.get_mut().write_all(&encode_command(args))?;
        read_reply(&mut self.reader)
    }

    /// Sends one command. Panics on I/O errors (the test's Redis is gone).
    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&raw)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}
