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
    fn db_numbers() {
        assert_eq!(db_number("redis://h:1/3"), 3);
        assert_eq!(db_number("redis://h:1"), 0);
        assert_eq!(db_number("redis://h:1/"), 0);
    }
}
