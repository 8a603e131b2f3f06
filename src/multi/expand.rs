//! The `%` templates (spec §3): multi's node expander (§3.1), the host
//! expander for node names (§5.1), and `~` expansion. The second expansion of
//! the pidfile path multi reads (§3.3) is the worker's own
//! (`node::names::expand_file`).

use std::path::PathBuf;

use super::error::MultiError;
use crate::protocol::template::{host_key, simple_format};

/// `template::simple_format`, with an unknown key an error, as multi's
/// templates are.
fn format_strict(
    template: &str,
    lookup: impl Fn(char) -> Option<String>,
) -> Result<String, MultiError> {
    let mut unknown = None;
    let out = simple_format(template, |k| {
        let v = lookup(k);
        if v.is_none() {
            unknown.get_or_insert(k);
        }
        v
    });
    match unknown {
        None => Ok(out),
        Some(key) => Err(MultiError::UnknownFormat {
            key,
            template: template.to_string(),
        }),
    }
}

/// Expands `%h` (hostname), `%n` (its first label) and `%d` (its domain) in a
/// node name, as Celery's `host_format`.
pub fn expand_host(template: &str, hostname: &str) -> Result<String, MultiError> {
    format_strict(template, |k| host_key(hostname, k))
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
    format_strict(template, |k| match k {
        'n' | 'N' => Some(short.to_string()),
        'h' | 'p' => Some(full_name.to_string()),
        'd' => Some(host.to_string()),
        'i' => Some("%i".to_string()),
        'I' => Some("%I".to_string()),
        _ => None,
    })
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
        let worker = |t: &str, node: &str| crate::node::names::expand_file(t, node, 0);
        assert_eq!(worker(&once, "w1@box.example.org"), "w1-w1.pid");
        assert_eq!(
            worker("%h %d %p %I%i", "w1@box.example.org"),
            "box.example.org example.org w1@box.example.org 0"
        );
        assert_eq!(worker("%z", "w1@vm"), "%z");
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
