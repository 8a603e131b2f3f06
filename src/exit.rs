//! Exit statuses of every `rmulti` command, in one place so the README and
//! `docs/ARCHITECTURE.md` can list them.

/// Success.
pub const OK: i32 = 0;
/// A runtime failure (a node failed, Redis unreachable, ...).
pub const FAILURE: i32 = 1;
/// Bad command line (clap's own code for usage errors, as Celery's launcher).
pub const USAGE: i32 = 2;
/// The pidfile is held by a live rmulti worker (Celery's EX_CANTCREAT).
pub const CANTCREAT: i32 = 73;
/// The app file is missing or invalid (EX_CONFIG).
pub const CONFIG: i32 = 78;
