//! The `celery multi` front end: argv grammar, node names and %-expansion,
//! and the start/stop/stopwait/restart/kill/show/names/get/expand/help commands.
//! It holds no state: the pid files are the truth.

/// Runs a multi command; `argv` starts with the command word (`start`, ...).
/// Returns the process exit status.
pub fn run(argv: Vec<String>) -> i32 {
    let _ = argv;
    eprintln!("rmulti: multi commands are not implemented yet");
    crate::exit::FAILURE
}
