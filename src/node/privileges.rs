//! `--umask`, `--uid` and `--gid`, applied by the node itself before it opens
//! any file (so logs and pidfile belong to the target user).

use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Group, Uid, User};

/// Celery's rule: octal when it starts with `0`, else decimal.
pub fn parse_umask(text: &str) -> Result<Mode, String> {
    let value = if text.len() > 1 && text.starts_with('0') {
        u32::from_str_radix(&text[1..], 8)
    } else {
        text.parse::<u32>()
    };
    value
        .ok()
        .filter(|v| *v <= 0o777)
        .map(Mode::from_bits_truncate)
        .ok_or_else(|| {
            format!("invalid --umask {text:?} (octal with a leading 0, e.g. 0022, or decimal)")
        })
}

pub fn apply_umask(mode: Mode) {
    umask(mode);
}

fn find_user(text: &str) -> Result<User, String> {
    let found = match text.parse::<u32>() {
        Ok(id) => User::from_uid(Uid::from_raw(id)),
        Err(_) => User::from_name(text),
    };
    found
        .ok()
        .flatten()
        .ok_or_else(|| format!("User does not exist: {text}"))
}

fn find_group(text: &str) -> Result<Gid, String> {
    let found = match text.parse::<u32>() {
        Ok(id) => Group::from_gid(Gid::from_raw(id)),
        Err(_) => Group::from_name(text),
    };
    found
        .ok()
        .flatten()
        .map(|g| g.gid)
        .ok_or_else(|| format!("Group does not exist: {text}"))
}

/// Drops to `uid`/`gid` when running as root: the group, the supplementary
/// groups (the user's, or only `gid`), then the user. Called before the
/// node detaches, so every pool child is forked already unprivileged. As non-root the options are
/// accepted only when they name the current user/group (so a unit file that
/// always passes them keeps working); anything else is an error, not a silent death.
pub fn drop_privileges(uid: Option<&str>, gid: Option<&str>) -> Result<(), String> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    let user = uid.map(find_user).transpose()?;
    let group = match gid {
        Some(g) => Some(find_group(g)?),
        None => user.as_ref().map(|u| u.gid),
    };
    if !Uid::effective().is_root() {
        let same_user = user.as_ref().is_none_or(|u| u.uid == Uid::effective());
        let same_group = group.is_none_or(|g| g == Gid::effective());
        if same_user && same_group {
            return Ok(());
        }
        return Err(
            "--uid/--gid need root to switch user (already running as another user)".to_string(),
        );
    }
    if let Some(g) = group {
        // Without --uid, root's supplementary groups would stay (Celery
        // keeps them); with it, initgroups below sets the user's.
        if user.is_none() {
            nix::unistd::setgroups(&[g]).map_err(|e| format!("setgroups([{g}]) failed: {e}"))?;
        }
        nix::unistd::setgid(g).map_err(|e| format!("setgid({g}) failed: {e}"))?;
    }
    if let Some(u) = &user {
        let name = std::ffi::CString::new(u.name.clone()).map_err(|e| e.to_string())?;
        nix::unistd::initgroups(&name, group.unwrap_or(u.gid))
            .map_err(|e| format!("initgroups failed: {e}"))?;
        nix::unistd::setuid(u.uid).map_err(|e| format!("setuid({}) failed: {e}", u.uid))?;
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err("could regain root after dropping privileges; refusing to run".to_string());
        }
    }
    Ok(())
}

/// Celery's `SecurityWarning` (celery.platforms.ROOT_DISCOURAGED) when the
/// node runs as root, or with the sudo or wheel group, after `--uid/--gid`
/// were applied. A warning, never a refusal: containers run as root, and
/// rmulti never unpickles anything.
pub fn warn_if_superuser() {
    let (uid, euid) = (Uid::current(), Uid::effective());
    let (gid, egid) = (Gid::current(), Gid::effective());
    let risky_group = [gid, egid].iter().any(|g| {
        Group::from_gid(*g)
            .ok()
            .flatten()
            .is_some_and(|g| g.name == "sudo" || g.name == "wheel")
    });
    if uid.is_root() || euid.is_root() || risky_group {
        tracing::warn!(
            "SecurityWarning: You're running the worker with superuser privileges: this is\n\
             absolutely not recommended!\n\n\
             Please specify a different user using the --uid option.\n\n\
             User information: uid={uid} euid={euid} gid={gid} egid={egid}\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_is_octal_with_leading_zero_else_decimal() {
        assert_eq!(parse_umask("0077").unwrap().bits(), 0o077);
        assert_eq!(parse_umask("22").unwrap().bits(), 22);
        assert!(parse_umask("0999").is_err());
        assert!(parse_umask("abc").is_err());
    }
}
