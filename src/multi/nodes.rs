//! Node list construction (spec §5): range mode (`start 3`) versus names
//! mode, the name prefix/suffix/host rules, the per-node option namespaces
//! (`-c:1`, `-Q:1-3`, `-c:a,b`, `-c:w1@host`), and the options multi itself
//! consumes (`--cmd --append --hostname/-n --prefix --suffix --range-prefix`,
//! plus rmulti's `--executable` and `--timeout`).

use super::argv::ParsedArgs;
use super::error::MultiError;
use super::expand::{expand_host, nodesplit};
use super::optmap::{Namespaces, OptionMap};

/// The worker command multi runs when `--cmd` is not given.
pub const DEFAULT_CMD: &str = "worker --detach";
pub const DEFAULT_PIDFILE: &str = "%n.pid";
pub const DEFAULT_LOGFILE: &str = "%n%I.log";

/// One node: its full name and the options of its worker command line, in
/// the merged order of §5.2, with `-n` and the pid/log defaults added.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub options: OptionMap,
    pub passthrough: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NodeList {
    pub nodes: Vec<NodeSpec>,
    pub cmd: String,
    pub append: Option<String>,
    /// `--executable`: the program to run instead of this rmulti.
    pub executable: Option<String>,
    /// `--timeout` (stopwait/restart), as given.
    pub timeout: Option<String>,
}

/// Python's `dict.pop(key, default) or default`: a bare flag or an empty
/// value counts as not given.
fn pop_value(options: &mut OptionMap, key: &str) -> Option<String> {
    options.remove(key).flatten().filter(|v| !v.is_empty())
}

/// `int()` as Python applies it to the single positional value.
fn parse_count(value: &str) -> Option<i64> {
    let t = value.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn is_index(ns: &str) -> bool {
    !ns.is_empty() && ns.chars().all(|c| c.is_ascii_digit())
}

fn index_of(ns: &str, names: &[String]) -> Result<usize, MultiError> {
    let k: usize = ns
        .parse()
        .map_err(|_| MultiError::NoNodeAtIndex(ns.to_string()))?;
    if k == 0 {
        return Err(MultiError::IndexZero(ns.to_string()));
    }
    if k > names.len() {
        return Err(MultiError::NoNodeAtIndex(ns.to_string()));
    }
    Ok(k - 1)
}

/// Numeric namespaces name the k-th node; the index form wins over the
/// name form for the same key, because it is applied on top.
fn map_indexes(namespaces: &mut Namespaces, names: &[String]) -> Result<(), MultiError> {
    for ns in namespaces.names() {
        if !is_index(&ns) {
            continue;
        }
        let target = names[index_of(&ns, names)?].clone();
        if target == ns {
            continue;
        }
        if let Some(opts) = namespaces.get(&ns).cloned() {
            namespaces.entry(&target).update(&opts);
        }
    }
    Ok(())
}

fn split_ns(ns: &str, ranges: bool) -> Result<Vec<String>, MultiError> {
    let mut out = Vec::new();
    for space in ns.split(',') {
        match space.split_once('-') {
            Some((start, stop)) if ranges => {
                let bad = || MultiError::BadRange(ns.to_string());
                let start: u64 = start.trim().parse().map_err(|_| bad())?;
                let stop: u64 = stop.trim().parse().map_err(|_| bad())?;
                out.extend((start..=stop).map(|n| n.to_string()));
            }
            _ => out.push(space.to_string()),
        }
    }
    Ok(out)
}

/// Expands `a,b` (and `1-3` in range mode) into one namespace per member.
fn split_lists(namespaces: &mut Namespaces, ranges: bool) -> Result<(), MultiError> {
    for ns in namespaces.names() {
        if !(ns.contains(',') || (ranges && ns.contains('-'))) {
            continue;
        }
        let members = split_ns(&ns, ranges)?;
        if let Some(opts) = namespaces.remove(&ns) {
            for member in members {
                namespaces.entry(&member).update(&opts);
            }
        }
    }
    Ok(())
}

pub fn build(parsed: ParsedArgs, gethostname: &str) -> Result<NodeList, MultiError> {
    let ParsedArgs {
        values,
        mut options,
        mut namespaces,
        passthrough,
    } = parsed;
    let cmd = pop_value(&mut options, "--cmd").unwrap_or_else(|| DEFAULT_CMD.to_string());
    let append = pop_value(&mut options, "--append");
    let long_host = pop_value(&mut options, "--hostname");
    let short_host = pop_value(&mut options, "-n");
    let hostname = long_host
        .or(short_host)
        .unwrap_or_else(|| gethostname.to_string());
    let mut prefix = pop_value(&mut options, "--prefix").unwrap_or_default();
    let suffix = pop_value(&mut options, "--suffix").unwrap_or_else(|| hostname.clone());
    let suffix = if suffix == "\"\"" || suffix == "''" {
        String::new()
    } else {
        suffix
    };
    let range_prefix =
        pop_value(&mut options, "--range-prefix").unwrap_or_else(|| "celery".to_string());
    let executable = pop_value(&mut options, "--executable");
    let timeout = options.remove("--timeout").map(|v| v.unwrap_or_default());
    // rmulti's worker has no `-p`: honour Celery's documented alias instead.
    options.rename("-p", "--pidfile");

    let mut names = values;
    let mut ranges = false;
    if names.len() == 1 {
        if let Some(count) = parse_count(&names[0]) {
            names = (1..=count.max(0)).map(|i| i.to_string()).collect();
            prefix = range_prefix;
            ranges = true;
        }
    }
    if ranges {
        map_indexes(&mut namespaces, &names)?;
        split_lists(&mut namespaces, true)?;
    } else {
        split_lists(&mut namespaces, false)?;
        map_indexes(&mut namespaces, &names)?;
    }

    let mut nodes = Vec::with_capacity(names.len());
    for raw in &names {
        let (ns, full) = if raw.contains('@') {
            let full = expand_host(raw, gethostname)?;
            let short = nodesplit(&full).0.to_string();
            (short, full)
        } else {
            let full = expand_host(&format!("{prefix}{raw}@{suffix}"), gethostname)?;
            (raw.clone(), full)
        };
        let ns = if namespaces.contains(&full) {
            full.clone()
        } else {
            ns
        };
        let mut node_opts = options.clone();
        if let Some(ns_opts) = namespaces.get(&ns) {
            node_opts.update(ns_opts);
        }
        node_opts.rename("-p", "--pidfile");
        node_opts.set("-n", Some(full.clone()));
        if !node_opts.contains("--pidfile") {
            node_opts.set("--pidfile", Some(DEFAULT_PIDFILE.to_string()));
        }
        if !node_opts.contains("--logfile") && !node_opts.contains("-f") {
            node_opts.set("--logfile", Some(DEFAULT_LOGFILE.to_string()));
        }
        nodes.push(NodeSpec {
            name: full,
            options: node_opts,
            passthrough: passthrough.clone(),
        });
    }
    Ok(NodeList {
        nodes,
        cmd,
        append,
        executable,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multi::argv::parse;

    fn list(args: &str) -> Result<NodeList, MultiError> {
        let argv: Vec<String> = args.split(' ').map(|s| s.to_string()).collect();
        build(parse(&argv).unwrap(), "vm")
    }

    fn names(args: &str) -> Vec<String> {
        list(args)
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| n.name)
            .collect()
    }

    fn opt(args: &str, key: &str) -> Vec<Option<String>> {
        list(args)
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.options.get(key).cloned().flatten())
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spec_5_1_names() {
        assert_eq!(names("3"), s(&["celery1@vm", "celery2@vm", "celery3@vm"]));
        assert_eq!(names("a b c"), s(&["a@vm", "b@vm", "c@vm"]));
        assert_eq!(
            names("2 --range-prefix=worker"),
            s(&["worker1@vm", "worker2@vm"])
        );
        assert_eq!(
            names("2 --prefix=pre- --suffix=host.x"),
            s(&["celery1@host.x", "celery2@host.x"])
        );
        assert_eq!(names("a b --prefix=pre-"), s(&["pre-a@vm", "pre-b@vm"]));
        assert_eq!(
            names("2 --hostname=worker.example.com"),
            s(&["celery1@worker.example.com", "celery2@worker.example.com"])
        );
        assert_eq!(names("w1 -n box.example.org"), s(&["w1@box.example.org"]));
        assert_eq!(names("a b --suffix=''"), s(&["a@", "b@"]));
        assert_eq!(names("a b --suffix=\"\""), s(&["a@", "b@"]));
        assert_eq!(
            names("foo@%h bar@example.com"),
            s(&["foo@vm", "bar@example.com"])
        );
        assert_eq!(
            names("w1 foo@box.example.org 3"),
            s(&["w1@vm", "foo@box.example.org", "3@vm"])
        );
    }

    #[test]
    fn spec_17_counts_and_names() {
        assert!(names("0").is_empty());
        assert!(names("-1").is_empty());
        assert_eq!(names("3-5"), s(&["3-5@vm"]));
        assert_eq!(names("1.5"), s(&["1.5@vm"]));
        let argv = vec![" 3 ".to_string()];
        let l = build(parse(&argv).unwrap(), "vm").unwrap();
        assert_eq!(l.nodes.len(), 3);
        assert_eq!(names("w1 w1"), s(&["w1@vm", "w1@vm"]));
        assert_eq!(names("2 3"), s(&["2@vm", "3@vm"]));
        assert_eq!(names("w1 -E w2"), s(&["w1@vm"]));
        assert_eq!(opt("w1 -E w2", "-E"), vec![Some("w2".to_string())]);
    }

    #[test]
    fn spec_5_2_namespaces() {
        let c = |args| opt(args, "-c");
        let v = |xs: &[&str]| xs.iter().map(|x| Some(x.to_string())).collect::<Vec<_>>();
        assert_eq!(c("3 -c 2 -c:1 4"), v(&["4", "2", "2"]));
        assert_eq!(
            opt("3 -Q:1-2 q1 -Q default", "-Q"),
            v(&["q1", "q1", "default"])
        );
        assert_eq!(
            c("5 -c 3 -c:1-3 10 -c:4,5 2"),
            v(&["10", "10", "10", "2", "2"])
        );
        assert_eq!(c("a b c -c 3 -c:b 10"), v(&["3", "10", "3"]));
        assert_eq!(
            opt("a b -Q:a@vm x", "-Q"),
            vec![Some("x".to_string()), None]
        );
        assert_eq!(
            c("a b c -c:1,3 5"),
            vec![Some("5".into()), None, Some("5".into())]
        );
        assert_eq!(c("show-me -c:show-me 5"), v(&["5"]));
        assert_eq!(c("w1 -c:w1@vm 3 -c:w1 4"), v(&["3"]));
        assert_eq!(c("a b -c:a,b 3"), v(&["3", "3"]));
        // silently ignored cases (§17 #13, #14), out-of-range range members
        assert_eq!(c("a b c -c:1-2 5"), vec![None, None, None]);
        assert_eq!(
            c("3 -c:celery1 7 -c:2 5"),
            vec![None, Some("5".into()), None]
        );
        assert_eq!(c("3 -c:1-5 9"), v(&["9", "9", "9"]));
        assert_eq!(c("3 -c:celery1@vm 7"), vec![Some("7".into()), None, None]);
    }

    #[test]
    fn index_errors() {
        assert!(matches!(
            list("3 -c:5 2"),
            Err(MultiError::NoNodeAtIndex(_))
        ));
        assert!(matches!(list("a b -c:0 2"), Err(MultiError::IndexZero(_))));
        assert!(matches!(
            list("a b -c:1,3 2"),
            Err(MultiError::NoNodeAtIndex(_))
        ));
        assert!(matches!(list("3 -c:a-b 2"), Err(MultiError::BadRange(_))));
    }

    #[test]
    fn merge_order_and_defaults() {
        let l = list("a b c -c:1,3 5 -l info").unwrap();
        let keys: Vec<&str> = l.nodes[0].options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["-l", "-c", "-n", "--pidfile", "--logfile"]);
        let l = list("w1 --pidfile=/x/%n.pid -f /y.log").unwrap();
        let keys: Vec<&str> = l.nodes[0].options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["--pidfile", "-f", "-n"]);
        let l = list("w1 -p /x/%n.pid").unwrap();
        assert_eq!(
            l.nodes[0].options.get("--pidfile"),
            Some(&Some("/x/%n.pid".into()))
        );
    }

    #[test]
    fn hostname_options_are_not_forwarded() {
        // spec §4.3: -n/--hostname set the host part, --hostname wins
        let l = list("w1 -n box.example.org --hostname=other.org -c 1").unwrap();
        assert_eq!(l.nodes[0].name, "w1@other.org");
        let n: Vec<_> = l.nodes[0]
            .options
            .iter()
            .filter(|(k, _)| k == "-n" || k == "--hostname")
            .collect();
        assert_eq!(n, [&("-n".to_string(), Some("w1@other.org".to_string()))]);
    }

    #[test]
    fn multi_options_are_consumed() {
        let l = list("w1 --cmd=worker --append=--x=%n --executable=/bin/true --timeout=5 -c 1")
            .unwrap();
        assert_eq!(l.cmd, "worker");
        assert_eq!(l.append.as_deref(), Some("--x=%n"));
        assert_eq!(l.executable.as_deref(), Some("/bin/true"));
        assert_eq!(l.timeout.as_deref(), Some("5"));
        let keys: Vec<&str> = l.nodes[0].options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["-c", "-n", "--pidfile", "--logfile"]);
    }
}
