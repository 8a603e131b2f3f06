//! Celery's `%` templates (`celery.utils.text.simple_format`) for node names
//! and log/pid file paths. Shared by the worker's own expansion
//! (`node::names`) and multi's tables (`multi::expand`), so it lives below
//! both.

/// Replaces `%%` with `%` and `%k` (`k` a word character) with `lookup(k)`.
/// A key `lookup` does not know is kept as it is, and so is any other `%`.
pub fn simple_format(template: &str, mut lookup: impl FnMut(char) -> Option<String>) -> String {
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
                if let Some(v) = lookup(k) {
                    chars.next();
                    out.push_str(&v);
                } else {
                    out.push('%');
                }
            }
            _ => out.push('%'),
        }
    }
    out
}

/// Celery's `host_format` keys for `host`: `%h` the host, `%n` its first
/// label, `%d` the rest (its domain).
pub fn host_key(host: &str, key: char) -> Option<String> {
    let (short, domain) = host.split_once('.').unwrap_or((host, ""));
    match key {
        'h' => Some(host.to_string()),
        'n' => Some(short.to_string()),
        'd' => Some(domain.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_percent_and_the_rest() {
        let lookup = |k| (k == 'a').then(|| "A".to_string());
        assert_eq!(simple_format("%a%%a%b 50%-%", lookup), "A%a%b 50%-%");
        assert_eq!(simple_format("%", lookup), "%");
    }

    #[test]
    fn host_keys() {
        let f = |t| simple_format(t, |k| host_key("box.example.org", k));
        assert_eq!(f("%h|%n|%d|%x"), "box.example.org|box|example.org|%x");
        assert_eq!(simple_format("%n.%d", |k| host_key("vm", k)), "vm.");
    }
}
