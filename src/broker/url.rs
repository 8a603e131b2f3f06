//! Redis URLs as Celery users write them (`redis://[:password@]host[:port][/db]`),
//! and their masked form for banners and logs.

/// The URL with any password replaced by `**`, as Celery prints it
/// (`redis://:**@127.0.0.1:6379/0`).
pub fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            format!("{scheme}://{user}:**@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The database number of a `redis://host:port/N` URL (0 when absent).
pub fn db_number(url: &str) -> i64 {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(_, path)| path.split(['?', '/']).next())
        .and_then(|db| db.parse().ok())
        .unwrap_or(0)
}

/// `Some((db of b, db of a))` when two `redis://` / `rediss://` URLs name the
/// same server with the same credentials and options (only the database may
/// differ), so one connection and one script can write to both.
pub fn same_server(a: &str, b: &str) -> Option<(i64, i64)> {
    fn server(url: &str) -> Option<(String, i64)> {
        let (scheme, rest) = url.split_once("://")?;
        if scheme != "redis" && scheme != "rediss" {
            return None;
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (db, query) = path.split_once('?').unwrap_or((path, ""));
        let db = if db.is_empty() { 0 } else { db.parse().ok()? };
        Some((format!("{scheme}://{authority}?{query}"), db))
    }
    let (sa, da) = server(a)?;
    let (sb, db) = server(b)?;
    (sa == sb).then_some((db, da))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_only() {
        assert_eq!(masked("redis://:secret@h:1/0"), "redis://:**@h:1/0");
        assert_eq!(masked("redis://user:secret@h:1/0"), "redis://user:**@h:1/0");
        assert_eq!(masked("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn same_server_only_when_all_but_the_db_match() {
        assert_eq!(same_server("redis://h:1/0", "redis://h:1/1"), Some((1, 0)));
        assert_eq!(same_server("redis://h:1", "redis://h:1/0"), Some((0, 0)));
        assert_eq!(same_server("redis://h:1/0", "redis://h:2/0"), None);
        assert_eq!(same_server("redis://:a@h:1/0", "redis://:b@h:1/0"), None);
        assert_eq!(same_server("redis://h:1/0", "rediss://h:1/0"), None);
        assert_eq!(same_server("redis://h:1/x", "redis://h:1/0"), None);
        assert_eq!(same_server("unix:///s?db=1", "unix:///s?db=1"), None);
    }

    #[test]
    fn db_numbers() {
        assert_eq!(db_number("redis://h:1/3"), 3);
        assert_eq!(db_number("redis://h:1"), 0);
        assert_eq!(db_number("redis://h:1/"), 0);
    }
}
