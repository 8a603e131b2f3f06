//! The per-node worker command line (spec §6.1, adapted to rmulti): the
//! program, the `--cmd` tokens with the hoisted options right after the
//! `worker` token, the merged options, the `--` passthrough and `--append`.
//! Also the pidfile/logfile paths multi itself reads or prepares, resolved
//! against `--workdir` when one is given (fixing spec §10.6).
//!
//! The argv is passed to the worker token by token: values with spaces or
//! quotes arrive intact (Celery joins and re-splits, §6.4).

use std::path::{Path, PathBuf};

use super::error::MultiError;
use super::expand::{expand_node, expand_tilde};
use super::nodes::{NodeList, NodeSpec, DEFAULT_LOGFILE};

/// Options that go right after the `worker` token, in reverse order of
/// appearance, as Celery inserts each one at the same position.
const HOISTED: &[&str] = &[
    "-A",
    "--app",
    "-b",
    "--broker",
    "--result-backend",
    "--loader",
    "--config",
    "--workdir",
    "-C",
    "--no-color",
    "-q",
    "--quiet",
];

/// Options whose value is a path, so a leading `~` is expanded (Celery 5.7).
const PATH_OPTIONS: &[&str] = &["--pidfile", "-p", "--logfile", "-f", "--workdir"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: String,
    /// The cmd tokens and options.
    pub args: Vec<String>,
    /// `--` and what follows it, verbatim.
    pub passthrough: Vec<String>,
    /// The expanded `--append` words.
    pub append: Vec<String>,
}

impl CommandLine {
    /// Everything after the program, as passed to the process.
    pub fn argv(&self) -> Vec<String> {
        let mut out = self.args.clone();
        out.extend(self.passthrough.iter().cloned());
        out.extend(self.append.iter().cloned());
        out
    }

    /// The `get` line: Celery's shape, including the space that stands for an
    /// empty passthrough. Words that a shell would split are quoted, so the
    /// line can be pasted back.
    pub fn display_args(&self) -> String {
        let mut line = quote_all(&self.args);
        line.push(' ');
        line.push_str(&quote_all(&self.passthrough));
        if !self.append.is_empty() {
            line.push(' ');
            line.push_str(&quote_all(&self.append));
        }
        line
    }

    /// The `show` line: the program, then the `get` line.
    pub fn display(&self) -> String {
        format!("{} {}", shell_quote(&self.program), self.display_args())
    }
}

fn quote_all(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "%@+-=_./:,~^".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn option_words(
    node: &NodeSpec,
    key: &str,
    value: &Option<String>,
) -> Result<Vec<String>, MultiError> {
    let value = match value {
        Some(v) if !v.is_empty() => {
            let v = expand_node(v, &node.name)?;
            if PATH_OPTIONS.contains(&key) {
                expand_tilde(&v)
            } else {
                v
            }
        }
        _ => return Ok(vec![key.to_string()]),
    };
    Ok(if key.starts_with("--") {
        vec![format!("{key}={value}")]
    } else {
        vec![key.to_string(), value]
    })
}

/// The command line of one node. `program` is the rmulti executable unless
/// `--executable` was given.
pub fn build(list: &NodeList, node: &NodeSpec, program: &str) -> Result<CommandLine, MultiError> {
    let mut args = Vec::new();
    for token in list.cmd.split_whitespace() {
        args.push(expand_node(token, &node.name)?);
    }
    let at = args.iter().position(|t| t == "worker").map_or(0, |i| i + 1);
    let mut rest = Vec::new();
    for (key, value) in node.options.iter() {
        let words = option_words(node, key, value)?;
        if HOISTED.contains(&key.as_str()) {
            args.splice(at..at, words);
        } else {
            rest.extend(words);
        }
    }
    args.extend(rest);
    let append = match &list.append {
        Some(a) => expand_node(a, &node.name)?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    Ok(CommandLine {
        program: program.to_string(),
        args,
        passthrough: node.passthrough.clone(),
        append,
    })
}

/// The value of the first of `keys` the node has, unless it is a bare flag
/// or empty.
pub(super) fn option_value<'a>(node: &'a NodeSpec, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| node.options.get(k))
        .and_then(|v| v.as_deref())
        .filter(|v| !v.is_empty())
}

/// The directory relative node paths live in: `--workdir` (itself relative
/// to `cwd`), else `cwd`.
pub fn workdir(node: &NodeSpec, cwd: &Path) -> PathBuf {
    match option_value(node, &["--workdir"]).map(|w| expand_node(w, &node.name)) {
        Some(Ok(w)) => cwd.join(expand_tilde(&w)),
        _ => cwd.to_path_buf(),
    }
}

/// A path as the worker's main process resolves it: multi's expansion, `~`,
/// then the worker's own table (the one it writes its pidfile with),
/// relative to the workdir.
fn node_path(node: &NodeSpec, template: &str, cwd: &Path) -> Option<PathBuf> {
    let once = expand_tilde(&expand_node(template, &node.name).ok()?);
    let twice = crate::node::names::expand_file(&once, &node.name, 0);
    Some(workdir(node, cwd).join(twice))
}

/// The pidfile multi reads; `None` when the option was given without a value
/// (the worker then refuses to start anyway).
pub fn pidfile_path(node: &NodeSpec, cwd: &Path) -> Option<PathBuf> {
    node_path(node, option_value(node, &["--pidfile", "-p"])?, cwd)
}

/// The main process's log file (`%I` = "").
pub fn logfile_path(node: &NodeSpec, cwd: &Path) -> Option<PathBuf> {
    let template = option_value(node, &["--logfile", "-f"]).unwrap_or(DEFAULT_LOGFILE);
    node_path(node, template, cwd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multi::argv::parse;
    use crate::multi::nodes;

    fn lines(args: &str) -> Vec<CommandLine> {
        let argv: Vec<String> = args.split(' ').map(|s| s.to_string()).collect();
        let list = nodes::build(parse(&argv).unwrap(), "vm").unwrap();
        list.nodes
            .iter()
            .map(|n| build(&list, n, "/usr/bin/rmulti").unwrap())
            .collect()
    }

    #[test]
    fn spec_6_1_order() {
        let l = lines("w1 -A proj -l info --pidfile=/srv/run/%n.pid --logfile=/srv/log/%n%I.log");
        assert_eq!(
            l[0].display(),
            "/usr/bin/rmulti worker -A proj --detach -l info --pidfile=/srv/run/w1.pid \
             --logfile=/srv/log/w1%I.log -n w1@vm "
        );
        let l = lines("w1 -A proj -l info");
        assert_eq!(
            l[0].display_args(),
            "worker -A proj --detach -l info -n w1@vm --pidfile=w1.pid --logfile=w1%I.log "
        );
    }

    #[test]
    fn hoisted_in_reverse_order() {
        let l = lines("w1 --workdir=/srv/w --app=proj -c 2 -b redis://x");
        assert_eq!(
            l[0].args,
            [
                "worker",
                "-b",
                "redis://x",
                "--app=proj",
                "--workdir=/srv/w",
                "--detach",
                "-c",
                "2",
                "-n",
                "w1@vm",
                "--pidfile=w1.pid",
                "--logfile=w1%I.log"
            ]
        );
    }

    #[test]
    fn cmd_append_passthrough() {
        let l = lines("w1 --cmd=worker --append=--foo=%n -- a=1 b=2");
        assert_eq!(
            l[0].display_args(),
            "worker -n w1@vm --pidfile=w1.pid --logfile=w1%I.log -- a=1 b=2 --foo=w1"
        );
        assert_eq!(l[0].argv().last().unwrap(), "--foo=w1");
        let l = lines("w1 --append=--x");
        assert!(l[0].display_args().ends_with("w1%I.log  --x"));
    }

    #[test]
    fn bare_and_empty_values() {
        let l = lines("w1 -E --without-mingle --umask=");
        assert!(l[0].args.contains(&"-E".to_string()));
        assert!(l[0].args.contains(&"--without-mingle".to_string()));
        assert!(l[0].args.contains(&"--umask".to_string()));
    }

    #[test]
    fn values_with_spaces_stay_one_word() {
        let argv: Vec<String> = vec!["w1".into(), "-Q".into(), "a b".into(), "--x=it's".into()];
        let list = nodes::build(parse(&argv).unwrap(), "vm").unwrap();
        let c = build(&list, &list.nodes[0], "rmulti").unwrap();
        assert_eq!(c.args[1..5], ["--detach", "-Q", "a b", "--x=it's"]);
        assert!(c.display().contains("-Q 'a b' '--x=it'\\''s'"));
    }

    #[test]
    fn tilde_in_path_options() {
        let home = std::env::var("HOME").unwrap();
        let l = lines("w1 --pidfile=~/run/%n.pid --workdir=~/x");
        assert!(l[0].args.contains(&format!("--pidfile={home}/run/w1.pid")));
        assert!(l[0].args.contains(&format!("--workdir={home}/x")));
    }

    #[test]
    fn paths_resolve_against_workdir() {
        let argv: Vec<String> = "w1 --workdir=/srv/wd --logfile=log/%n%I.log"
            .split(' ')
            .map(String::from)
            .collect();
        let list = nodes::build(parse(&argv).unwrap(), "vm").unwrap();
        let n = &list.nodes[0];
        let cwd = Path::new("/home/x");
        assert_eq!(pidfile_path(n, cwd).unwrap(), Path::new("/srv/wd/w1.pid"));
        assert_eq!(
            logfile_path(n, cwd).unwrap(),
            Path::new("/srv/wd/log/w1.log")
        );
        let argv: Vec<String> = vec!["w1".into(), "--pidfile=/run/%%n-%n.pid".into()];
        let list = nodes::build(parse(&argv).unwrap(), "vm").unwrap();
        assert_eq!(
            pidfile_path(&list.nodes[0], cwd).unwrap(),
            Path::new("/run/w1-w1.pid")
        );
        assert_eq!(
            pidfile_path(
                &nodes::build(parse(&["a".to_string()]).unwrap(), "vm")
                    .unwrap()
                    .nodes[0],
                cwd
            )
            .unwrap(),
            Path::new("/home/x/a.pid")
        );
    }
}
