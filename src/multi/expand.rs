//! The `%` templates (spec §3): multi's node expander (§3.1), the host
//! expander for node names (§5.1), the worker's own table used for the second
//! expansion of the pidfile path multi reads (§3.3), and `~` expansion.

use std::path::PathBuf;

use super::error::MultiError;

/// `%` followed by one word character or `%` is a key; anything else is kept
/// as it is. `strict` makes an unknown key an error (multi's behaviour);
/// otherwise it is left literal.
fn simple_format(
    template: &str,
    lookup: impl Fn(char) -> Option<String>,
    strict: bool,
) -> Result<String, MultiError> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('%') => {
                chars.next();
                out.push('%');
            }
            Some(k) if k.is_alphanumeric() || k == '_' => {
                chars.next();
                match lookup(k) {
                    Some(v) => out.push_str(&v),
                    None if strict => {
                        return Err(MultiError::UnknownFormat {
                            key: k,
                            template: template.to_string(),
                        })
                    }
                    None => {
                        out.push('%');
                        out.push(k);
                    }
                }
            }
            _ => out.push('%'),
        }
    }
    Ok(out)
}

/// Expands `%h` (hostname), `%n` (its first label) and `%d` (its domain) in a
/// node name, as Celery's `host_format`.
pub fn expand_host(template: &str, hostname: &str) -> Result<String, MultiError> {
    let (short, domain) = hostname.split_once('.').unwrap_or((hostname, ""));
    simple_format(
        template,
        |k| match k {
            'h' => Some(hostname.to_string()),
            'n' => Some(short.to_string()),
            'd' => Some(domain.to_string()),
            _ => None,
        },
        true,
    )
}

/// Splits a full node name at the first `@`.
pub fn nodesplit(full: &str) -> (&str, &str) {
    full.split_once('@').unwrap_or((full, ""))
}

/// multi's table (§3.1): `%n %N` short name, `%h %p` full name, `%d` whole
/// host part, `%i %I` kept for the worker, `%%` → `%`.
pub fn expand_node(template: &str, full_name: &str) -> Result<String, MultiError> {
    let (short, host) = nodesplit(full_name);
    let short = if short.is_empty() { "celery" } else { short };
    simple_format(
        template,
        |k| match k {
            'n' | 'N' => Some(short.to_string()),
            'h' | 'p' => Some(full_name.to_string()),
            'd' => Some(host.to_string()),
            'i' => Some("%i".to_string()),
            'I' => Some("%I".to_string()),
            _ => None,
        },
        true,
    )
}

/// The worker's table for its main process (§3.2), used for the second
/// expansion of the pidfile path multi reads. Lenient: a key the worker would
/// reject is left as it is, since multi only reads the file.
pub fn expand_worker(template: &str, full_name: &str) -> String {
    let (short, host) = nodesplit(full_name);
    let short = if short.is_empty() { "celery" } else { short };
    let domain = host.split_once('.').map(|(_, d)| d).unwrap_or("");
    let out = simple_format(
        template,
        |k| match k {
            'p' => Some(full_name.to_string()),
            'h' => Some(host.to_string()),
            'n' => Some(short.to_string()),
            'd' => Some(domain.to_string()),
            'i' => Some("0".to_string()),
            'I' => Some(String::new()),
            _ => None,
        },
        false,
    );
    out.unwrap_or_else(|_| template.to_string())
}

/// A leading `~` or `~user`, as Python's `os.path.expanduser`. Left as it is
/// when the home directory cannot be found.
pub fn expand_tilde(path: &str) -> String {
    let Some(rest) = path.strip_prefix('~') else {
        return path.to_string();
    };
    let (user, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let home: Option<PathBuf> = if user.is_empty() {
        std::env::var_os("HOME").map(PathBuf::from).or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
    } else {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.dir)
    };
    match home {
        Some(home) => format!("{}{}", home.display(), tail),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_3_1_table() {
        let t = "[n=%n][h=%h][d=%d][i=%i][I=%I][p=%p][N=%N][pct=%%]";
        assert_eq!(
            expand_node(t, "w1@vm").unwrap(),
            "[n=w1][h=w1@vm][d=vm][i=%i][I=%I][p=w1@vm][N=w1][pct=%]"
        );
        assert_eq!(
            expand_node(t, "foo@box.example.org").unwrap(),
            "[n=foo][h=foo@box.example.org][d=box.example.org][i=%i][I=%I][p=foo@box.example.org][N=foo][pct=%]"
        );
        assert_eq!(
            expand_node(t, "3@vm").unwrap(),
            "[n=3][h=3@vm][d=vm][i=%i][I=%I][p=3@vm][N=3][pct=%]"
        );
    }

    #[test]
    fn unknown_key_is_an_error_and_non_keys_are_kept() {
        assert!(matches!(
            expand_node("%x", "w1@vm"),
            Err(MultiError::UnknownFormat { key: 'x', .. })
        ));
        assert_eq!(expand_node("50%-%", "w1@vm").unwrap(), "50%-%");
    }

    #[test]
    fn logfile_and_pidfile_defaults() {
        assert_eq!(expand_node("%n%I.log", "w1@vm").unwrap(), "w1%I.log");
        assert_eq!(expand_node("%n.pid", "w1@vm").unwrap(), "w1.pid");
        // §3.3: --logfile=%h.log is the full name under multi
        assert_eq!(expand_node("%h.log", "w1@vm").unwrap(), "w1@vm.log");
    }

    #[test]
    fn double_expansion_of_pidfile() {
        let once = expand_node("%%n-%n.pid", "w1@box.example.org").unwrap();
        assert_eq!(once, "%n-w1.pid");
        assert_eq!(expand_worker(&once, "w1@box.example.org"), "w1-w1.pid");
        assert_eq!(
            expand_worker("%h %d %p %I%i", "w1@box.example.org"),
            "box.example.org example.org w1@box.example.org 0"
        );
        assert_eq!(expand_worker("%z", "w1@vm"), "%z");
    }

    #[test]
    fn host_expansion() {
        assert_eq!(expand_host("foo@%h", "vm").unwrap(), "foo@vm");
        assert_eq!(
            expand_host("a@%n.%d", "box.example.org").unwrap(),
            "a@box.example.org"
        );
        assert_eq!(
            expand_host("bar@example.com", "vm").unwrap(),
            "bar@example.com"
        );
    }

    #[test]
    fn tilde() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(expand_tilde("~/run/%n.pid"), format!("{home}/run/%n.pid"));
        assert_eq!(expand_tilde("~"), home);
        assert_eq!(expand_tilde("/x/~"), "/x/~");
        assert_eq!(expand_tilde("~nosuchuser_zz/x"), "~nosuchuser_zz/x");
    }
}
