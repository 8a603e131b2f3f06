//! The `celery multi` front end: argv grammar, node names and %-expansion,
//! and the start/stop/stopwait/restart/kill/show/names/get/expand/help commands.
//! It holds no state: the pid files are the truth.
//!
//! Exit statuses (Celery's `multi` always exits 0; rmulti's mean something):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success (including `stop` of nodes that were already down) |
//! | 1 | a node failed to start or restart; a running node could not be signalled; `stopwait --timeout` had to SIGKILL a node; `kill` could not get rid of a node; `get` found no such node |
//! | 2 | usage error: no or unknown command, a lone `-`, `-c:1:2`, a bad node index or range, an unknown `%x` key, `get`/`expand` without their argument, a bad `--timeout` |
//!
//! `--help` anywhere before `--` prints the usage text and exits 0.

mod argv;
mod cmdline;
mod commands;
mod dirs;
mod error;
mod expand;
mod help;
mod launch;
mod nodes;
mod optmap;
mod output;
mod signal;

pub use error::MultiError;

use output::Output;

/// Runs a multi command; `argv` starts with the command word (`start`, ...).
/// Returns the process exit status.
pub fn run(argv: Vec<String>) -> i32 {
    let mut argv = argv;
    if argv[..argv::passthrough_start(&argv)]
        .iter()
        .any(|a| a == "--help")
    {
        print!("{}", help::USAGE);
        return crate::exit::OK;
    }
    let reserved = argv::take_reserved(&mut argv);
    let out = Output::new(reserved);
    let Some(command) = argv.first().filter(|c| !c.starts_with('-')).cloned() else {
        usage(&out);
        return crate::exit::USAGE;
    };
    let ctx = match commands::Ctx::new(out) {
        Ok(ctx) => ctx,
        Err(e) => {
            out.error(&format!("rmulti: {e}"));
            return crate::exit::FAILURE;
        }
    };
    let args = &argv[1..];
    let result = match command.as_str() {
        "start" => commands::start::start(&ctx, args),
        "stop" => commands::stop::stop(&ctx, args, false),
        "stopwait" | "stop_verify" => commands::stop::stop(&ctx, args, true),
        "restart" => commands::restart::restart(&ctx, args),
        "kill" => commands::kill::kill(&ctx, args),
        "show" => commands::info::show(&ctx, args),
        "names" => commands::info::names(&ctx, args),
        "get" => commands::info::get(&ctx, args),
        "expand" => commands::info::expand(&ctx, args),
        "help" => {
            ctx.out.say(help::HELP);
            Ok(crate::exit::OK)
        }
        other => {
            out.error(&format!("Invalid command: {other}"));
            usage(&out);
            return crate::exit::USAGE;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            out.error(&format!("rmulti {command}: {e}"));
            e.exit_code()
        }
    }
}

fn usage(out: &Output) {
    out.splash();
    out.say(help::USAGE);
}
