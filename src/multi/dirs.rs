//! The missing parent directories of a node's pid and log files, created by
//! `start` and `restart` only (Celery creates them for every command, even
//! `names`, §7.2). As root with `--uid`/`--gid`, the directories multi
//! creates are handed to that user and group, so the node can still write
//! its pidfile and logs after it drops privileges.

use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid, Group, Uid, User};

use super::cmdline::option_value;
use super::nodes::NodeSpec;

fn find_user(text: &str) -> Option<User> {
    match text.parse::<u32>() {
        Ok(id) => User::from_uid(Uid::from_raw(id)).ok().flatten(),
        Err(_) => User::from_name(text).ok().flatten(),
    }
}

fn find_group(text: &str) -> Option<Gid> {
    match text.parse::<u32>() {
        Ok(id) => Some(Gid::from_raw(id)),
        Err(_) => Group::from_name(text).ok().flatten().map(|g| g.gid),
    }
}

/// Who should own the directories multi creates for this node: `None`
/// unless multi runs as root and the node drops to another user or group.
/// An unknown user is left for the worker to report.
pub fn owner(node: &NodeSpec) -> Option<(Option<Uid>, Option<Gid>)> {
    if !Uid::effective().is_root() {
        return None;
    }
    let user = option_value(node, &["--uid"]).and_then(find_user);
    let gid = option_value(node, &["--gid"])
        .and_then(find_group)
        .or(user.as_ref().map(|u| u.gid));
    let uid = user.map(|u| u.uid);
    (uid.is_some() || gid.is_some()).then_some((uid, gid))
}

/// Creates `dir` and its missing parents, chowning only those it created.
pub fn create(dir: &Path, owner: Option<(Option<Uid>, Option<Gid>)>) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    std::fs::create_dir_all(dir)?;
    if let Some((uid, gid)) = owner {
        for p in missing {
            chown(&p, uid, gid).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn creates_and_chowns_only_new_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a/b/c");
        let me = (Some(Uid::effective()), Some(Gid::effective()));
        create(&target, Some(me)).unwrap();
        assert!(target.is_dir());
        assert_eq!(
            std::fs::metadata(&target).unwrap().uid(),
            Uid::effective().as_raw()
        );
        create(&target, None).unwrap();
    }
}
