//! celery multi's argv grammar (spec §1.2, §4): the reserved multi-only
//! options, then the tokenisation into positional values, global and
//! namespaced options, and the `--` passthrough.
//!
//! One deliberate difference from Celery: a long option that is known to take
//! a value (`--logfile`, `--app`, ...) written without `=` takes the next token
//! as its value, where Celery 5.7 crashes or turns the value into a node name.

use super::error::MultiError;
use super::optmap::{Namespaces, OptionMap};

/// The multi-only switches, removed from argv before anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub nosplash: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub no_color: bool,
}

/// Removes the first occurrence of each reserved token, as Celery does: a
/// second `-q` is left in and reaches the worker.
pub fn take_reserved(argv: &mut Vec<String>) -> Reserved {
    let mut reserved = Reserved::default();
    type Apply = fn(&mut Reserved);
    let table: [(&str, Apply); 5] = [
        ("--nosplash", |r| r.nosplash = true),
        ("--quiet", |r| r.quiet = true),
        ("-q", |r| r.quiet = true),
        ("--verbose", |r| r.verbose = true),
        ("--no-color", |r| r.no_color = true),
    ];
    for (token, apply) in table {
        let end = passthrough_start(argv);
        if let Some(pos) = argv[..end].iter().position(|a| a == token) {
            argv.remove(pos);
            apply(&mut reserved);
        }
    }
    reserved
}

/// Index of the `--` token, or the length: multi never looks past it.
pub fn passthrough_start(argv: &[String]) -> usize {
    argv.iter().position(|a| a == "--").unwrap_or(argv.len())
}

/// Long options whose value may be given as the next token.
const LONG_WITH_VALUE: &[&str] = &[
    "--app",
    "--hostname",
    "--concurrency",
    "--queues",
    "--loglevel",
    "--logfile",
    "--pidfile",
    "--workdir",
    "--umask",
    "--uid",
    "--gid",
    "--broker",
    "--result-backend",
    "--max-tasks-per-child",
    "--max-memory-per-child",
    "--time-limit",
    "--soft-time-limit",
    "--pool",
    "--prefetch-multiplier",
    "--cmd",
    "--append",
    "--prefix",
    "--suffix",
    "--range-prefix",
    "--timeout",
    "--executable",
];

#[derive(Debug, Clone, Default)]
pub struct ParsedArgs {
    /// Node names or the node count, in order.
    pub values: Vec<String>,
    pub options: OptionMap,
    pub namespaces: Namespaces,
    /// `--` and every token after it, forwarded verbatim.
    pub passthrough: Vec<String>,
}

fn starts_with_dash(token: &str) -> bool {
    token.starts_with('-')
}

pub fn parse(argv: &[String]) -> Result<ParsedArgs, MultiError> {
    let tokens: Vec<&String> = argv.iter().filter(|a| !a.is_empty()).collect();
    let mut parsed = ParsedArgs::default();
    let mut pos = 0;
    while pos < tokens.len() {
        let arg = tokens[pos].as_str();
        if arg == "--" {
            parsed.passthrough = tokens[pos..].iter().map(|s| s.to_string()).collect();
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, mut value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if value.is_none() {
                let base = name.split(':').next().unwrap_or(name);
                let next = tokens.get(pos + 1);
                if LONG_WITH_VALUE.contains(&format!("--{base}").as_str()) {
                    if let Some(next) = next.filter(|n| !starts_with_dash(n)) {
                        value = Some(next.to_string());
                        pos += 1;
                    }
                }
            }
            add_option(&mut parsed, name, value, false)?;
        } else if let Some(short) = arg.strip_prefix('-') {
            if short.is_empty() {
                return Err(MultiError::LoneDash);
            }
            let mut value = None;
            if let Some(next) = tokens.get(pos + 1).filter(|n| !starts_with_dash(n)) {
                value = Some(next.to_string());
                pos += 1;
            }
            add_option(&mut parsed, short, value, true)?;
        } else {
            parsed.values.push(arg.to_string());
        }
        pos += 1;
    }
    Ok(parsed)
}

fn add_option(
    parsed: &mut ParsedArgs,
    name: &str,
    value: Option<String>,
    short: bool,
) -> Result<(), MultiError> {
    let name = name.trim_start_matches('-');
    let prefix = if short { "-" } else { "--" };
    let mut parts = name.split(':');
    let base = parts.next().unwrap_or("");
    let ns = parts.next();
    if parts.next().is_some() {
        return Err(MultiError::TooManyNamespaces(format!("{prefix}{name}")));
    }
    let key = format!("{prefix}{base}");
    match ns {
        Some(ns) if !ns.is_empty() => parsed.namespaces.entry(ns).set(&key, value),
        _ => parsed.options.set(&key, value),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn opts(p: &ParsedArgs) -> Vec<(String, Option<String>)> {
        p.options.iter().cloned().collect()
    }

    #[test]
    fn reserved_first_occurrence_only() {
        let mut a = v(&[
            "start",
            "-q",
            "w1",
            "-q",
            "--nosplash",
            "--verbose",
            "--no-color",
        ]);
        let r = take_reserved(&mut a);
        assert!(r.quiet && r.nosplash && r.verbose && r.no_color);
        assert_eq!(a, v(&["start", "w1", "-q"]));
    }

    #[test]
    fn reserved_not_taken_after_passthrough() {
        let mut a = v(&["w1", "--", "--quiet"]);
        let r = take_reserved(&mut a);
        assert!(!r.quiet);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn tokenisation_rules() {
        let p = parse(&v(&[
            "w1",
            "",
            "-c",
            "2",
            "--logfile=x=y",
            "-Ofair",
            "-E",
            "--flag",
            "w2",
        ]))
        .unwrap();
        assert_eq!(p.values, v(&["w1", "w2"]));
        assert_eq!(
            opts(&p),
            vec![
                ("-c".into(), Some("2".into())),
                ("--logfile".into(), Some("x=y".into())),
                ("-Ofair".into(), None),
                ("-E".into(), None),
                ("--flag".into(), None),
            ]
        );
    }

    #[test]
    fn short_option_swallows_next_value() {
        // spec §4.3: `start w1 -E w2` is one node whose worker gets `-E w2`
        let p = parse(&v(&["w1", "-E", "w2"])).unwrap();
        assert_eq!(p.values, v(&["w1"]));
        assert_eq!(opts(&p), vec![("-E".into(), Some("w2".into()))]);
        // an option before the names swallows the first name
        let p = parse(&v(&["-E", "w1"])).unwrap();
        assert!(p.values.is_empty());
    }

    #[test]
    fn last_value_wins_at_first_position() {
        let p = parse(&v(&["-c", "2", "-l", "info", "-c", "3"])).unwrap();
        assert_eq!(
            opts(&p),
            vec![
                ("-c".into(), Some("3".into())),
                ("-l".into(), Some("info".into()))
            ]
        );
    }

    #[test]
    fn passthrough_keeps_everything_after_dashdash() {
        let p = parse(&v(&["w1", "--", "a=1", "--pidfile=x"])).unwrap();
        assert_eq!(p.passthrough, v(&["--", "a=1", "--pidfile=x"]));
        assert!(p.options.is_empty());
    }

    #[test]
    fn namespaces() {
        let p = parse(&v(&["-c:1", "4", "--logfile:w1@vm=x", "-c:", "5"])).unwrap();
        assert_eq!(
            p.namespaces.get("1").unwrap().get("-c"),
            Some(&Some("4".into()))
        );
        assert_eq!(
            p.namespaces.get("w1@vm").unwrap().get("--logfile"),
            Some(&Some("x".into()))
        );
        // an empty namespace is the global one
        assert_eq!(p.options.get("-c"), Some(&Some("5".into())));
    }

    #[test]
    fn grammar_errors() {
        assert!(matches!(parse(&v(&["w1", "-"])), Err(MultiError::LoneDash)));
        assert!(matches!(
            parse(&v(&["-c:1:2", "3"])),
            Err(MultiError::TooManyNamespaces(_))
        ));
    }

    #[test]
    fn known_long_option_takes_next_token() {
        let p = parse(&v(&[
            "w1",
            "--logfile",
            "/var/log/x.log",
            "--without-mingle",
            "w2",
        ]))
        .unwrap();
        assert_eq!(p.values, v(&["w1", "w2"]));
        assert_eq!(
            p.options.get("--logfile"),
            Some(&Some("/var/log/x.log".into()))
        );
        assert_eq!(p.options.get("--without-mingle"), Some(&None));
    }
}
