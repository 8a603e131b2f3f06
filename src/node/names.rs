//! The worker's own name expansion (Celery's `celery worker`, not multi's):
//! `-n/--hostname` host expansion, and `%p %h %n %d %i %I` in log and pid files.

/// This machine's host name (`socket.gethostname()`).
pub fn gethostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn split_host(host: &str) -> (&str, &str) {
    host.split_once('.').unwrap_or((host, ""))
}

/// Expands `%h` (host), `%n` (short host), `%d` (domain) in a `-n` value.
fn expand_host_part(text: &str, host: &str) -> String {
    let (short, domain) = split_host(host);
    replace_keys(text, |k| match k {
        'h' => Some(host.to_string()),
        'n' => Some(short.to_string()),
        'd' => Some(domain.to_string()),
        _ => None,
    })
}

/// The full node name from `-n`: `w1@%h` → `w1@vm`; a value without `@` is the
/// host (`celery@value`); none gives `celery@<hostname>`.
pub fn node_name(arg: Option<&str>, host: &str) -> String {
    match arg {
        None => format!("celery@{host}"),
        Some(v) => match v.split_once('@') {
            Some((name, h)) => format!(
                "{}@{}",
                expand_host_part(name, host),
                expand_host_part(h, host)
            ),
            None => format!("celery@{}", expand_host_part(v, host)),
        },
    }
}

/// Expands a log/pid file template for `node` in pool process `index`
/// (0 = the main process: `%I` is "", `%i` is 0).
pub fn expand_file(template: &str, node: &str, index: usize) -> String {
    let (name, host) = match node.split_once('@') {
        Some((n, h)) => (n, h),
        None => ("celery", node),
    };
    let (_, domain) = split_host(host);
    replace_keys(template, |k| match k {
        'p' => Some(node.to_string()),
        'h' => Some(host.to_string()),
        'n' => Some(name.to_string()),
        'd' => Some(domain.to_string()),
        'i' => Some(index.to_string()),
        'I' => Some(if index == 0 {
            String::new()
        } else {
            format!("-{index}")
        }),
        _ => None,
    })
}

/// Replaces `%x` for keys `lookup` knows and `%%` with `%`; leaves others as they are.
fn replace_keys(text: &str, lookup: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
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
            Some(k) => match lookup(k) {
                Some(v) => {
                    chars.next();
                    out.push_str(&v);
                }
                None => out.push('%'),
            },
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_celery() {
        assert_eq!(node_name(Some("w1@%h"), "vm"), "w1@vm");
        assert_eq!(node_name(Some("justname"), "vm"), "celery@justname");
        assert_eq!(node_name(None, "vm"), "celery@vm");
        assert_eq!(node_name(Some("w1@%d"), "vm"), "w1@");
        assert_eq!(node_name(Some("w1@%n.x"), "box.example.org"), "w1@box.x");
    }

    #[test]
    fn file_templates_follow_the_worker_table() {
        assert_eq!(expand_file("%n%I.log", "w1@vm", 0), "w1.log");
        assert_eq!(expand_file("%n%I.log", "w1@vm", 2), "w1-2.log");
        assert_eq!(expand_file("%n-%i.log", "w1@vm", 0), "w1-0.log");
        assert_eq!(
            expand_file("%p|%h|%d", "foo@box.example.org", 0),
            "foo@box.example.org|box.example.org|example.org"
        );
        assert_eq!(expand_file("100%%-%x", "w1@vm", 0), "100%-%x");
    }
}
