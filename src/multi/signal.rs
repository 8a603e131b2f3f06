//! The signal argument of `stop`, `stopwait` and `restart` (spec §8):
//! `-9`, `-KILL`, `-SIGUSR1` among the options after the node names.
//!
//! Unlike Celery, the token is taken out of argv before the options are
//! parsed, so `restart w1 -KILL` does not pass `-KILL` to the new worker.

use std::str::FromStr;

use nix::sys::signal::Signal;

use super::error::MultiError;

/// Python's `str.isupper()`: at least one cased character, none lower case.
fn is_upper(s: &str) -> bool {
    s.chars().any(|c| c.is_alphabetic()) && !s.chars().any(|c| c.is_lowercase())
}

fn parse_token(token: &str) -> Option<Result<Signal, MultiError>> {
    let name = token.strip_prefix('-')?;
    let mut chars = name.chars();
    if let (Some(d), None) = (chars.next(), chars.next()) {
        if let Some(n) = d.to_digit(10) {
            if n == 0 {
                return Some(Err(MultiError::SignalZero));
            }
            return Signal::try_from(n as i32).ok().map(Ok);
        }
    }
    if !is_upper(name) {
        return None;
    }
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    Signal::from_str(&full).ok().map(Ok)
}

/// Finds the signal among `argv[k..]` (k = the number of node values, which
/// are assumed to come first), scanning from the end; the first match wins.
/// Returns the signal and the index of its token, or TERM and `None`.
pub fn find_signal(argv: &[String], k: usize) -> Result<(Signal, Option<usize>), MultiError> {
    let end = super::argv::passthrough_start(argv);
    for i in (k.min(end)..end).rev() {
        if let Some(found) = parse_token(&argv[i]) {
            return Ok((found?, Some(i)));
        }
    }
    Ok((Signal::SIGTERM, None))
}

/// `TERM`, `KILL`, ...: signal names as multi prints them, without `SIG`.
pub fn signal_name(sig: Signal) -> &'static str {
    let s = sig.as_str();
    s.strip_prefix("SIG").unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(args: &str, k: usize) -> (Signal, Option<usize>) {
        let argv: Vec<String> = args.split(' ').map(String::from).collect();
        find_signal(&argv, k).unwrap()
    }

    #[test]
    fn spec_8_examples() {
        assert_eq!(sig("w1 -9", 1).0, Signal::SIGKILL);
        assert_eq!(sig("w1 -1", 1).0, Signal::SIGHUP);
        assert_eq!(sig("w1 -2", 1).0, Signal::SIGINT);
        assert_eq!(sig("w1 -3", 1).0, Signal::SIGQUIT);
        assert_eq!(sig("w1 -6", 1).0, Signal::SIGABRT);
        assert_eq!(sig("w1 -KILL", 1), (Signal::SIGKILL, Some(1)));
        assert_eq!(sig("w1 -HUP", 1).0, Signal::SIGHUP);
        assert_eq!(sig("w1 -QUIT", 1).0, Signal::SIGQUIT);
        assert_eq!(sig("w1 -INT", 1).0, Signal::SIGINT);
        assert_eq!(sig("w1 -USR1", 1).0, Signal::SIGUSR1);
        assert_eq!(sig("w1 -SIGUSR1", 1).0, Signal::SIGUSR1);
        assert_eq!(sig("w1 -TERM", 1).0, Signal::SIGTERM);
        assert_eq!(sig("w1 -10", 1), (Signal::SIGTERM, None));
        assert_eq!(sig("w1 -sigusr1", 1), (Signal::SIGTERM, None));
        assert_eq!(sig("w1", 1), (Signal::SIGTERM, None));
        // the last one wins, and node values are skipped
        assert_eq!(sig("w1 -KILL -l info -QUIT", 1), (Signal::SIGQUIT, Some(4)));
        // not after --
        assert_eq!(sig("w1 -- -KILL", 1), (Signal::SIGTERM, None));
        let argv: Vec<String> = vec!["w1".into(), "-0".into()];
        assert!(find_signal(&argv, 1).is_err());
    }

    #[test]
    fn printed_names() {
        assert_eq!(signal_name(Signal::SIGTERM), "TERM");
        assert_eq!(signal_name(Signal::SIGUSR1), "USR1");
    }
}
