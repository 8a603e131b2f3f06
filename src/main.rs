//! `rmulti` binary: parse and dispatch; everything else lives in the library.

use clap::Parser;
use rmulti::cli::{Cli, Command, MULTI_COMMANDS};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(first) = argv.get(1) {
        // `rmulti help worker|call`: clap's help of that command.
        if first == "help" {
            if let Some(cmd) = argv.get(2).filter(|c| *c == "worker" || *c == "call") {
                Cli::parse_from([argv[0].as_str(), cmd, "--help"]);
            }
        }
        if MULTI_COMMANDS.contains(&first.as_str()) || first == "help" {
            let rest = if first == "multi" {
                argv[2..].to_vec()
            } else {
                argv[1..].to_vec()
            };
            let code = rmulti::multi::run(rest);
            if first == "help" && argv.len() == 2 {
                println!("\n{}", rmulti::cli::HELP_FOOTER);
            }
            std::process::exit(code);
        }
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Worker(args) => rmulti::node::run_worker(*args),
        Command::Call(args) => rmulti::client::run_call(*args),
        Command::Inspect(args) => rmulti::control::run(rmulti::control::Kind::Inspect, *args),
        Command::Control(args) => rmulti::control::run(rmulti::control::Kind::Control, *args),
        Command::Status(args) => rmulti::control::run_status(*args),
    };
    std::process::exit(code);
}
