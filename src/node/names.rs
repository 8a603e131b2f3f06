//! The worker's own name expansion (Celery's `celery worker`, not multi's):
//! `-n/--hostname` host expansion, and `%p %h %n %d %i %I` in log and pid files.

use crate::protocol::template::{host_key, simple_format};

/// The full node name from `-n`: `w1@%h` → `w1@vm`; a value without `@` is the
/// host (`celery@value`); none gives `celery@<hostname>`.
pub fn node_name(arg: Option<&str>, host: &str) -> String {
    let expand = |text: &str| simple_format(text, |k| host_key(host, k));
    match arg {
        None => format!("celery@{host}"),
        Some(v) => match v.split_once('@') {
            Some((name, h)) => format!("{}@{}", expand(name), expand(h)),
            None => format!("celery@{}", expand(v)),
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
    simple_format(template, |k| match k {
        'p' => Some(node.to_string()),
        'n' => Some(name.to_string()),
        'i' => Some(index.to_string()),
        'I' => Some(if index == 0 {
            String::new()
        } else {
            format!("-{index}")
        }),
        // %h is the whole host part, %d its domain.
        _ => host_key(host, k),
    })
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
