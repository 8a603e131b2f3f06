//! Writes the man pages and shell completions of `rmulti` from its clap
//! definitions (`rmulti::cli::full_command`), for `bin/package`:
//!
//!     cargo run --release --example package_assets -- OUT_DIR
//!
//! OUT_DIR/man/rmulti.1, rmulti-worker.1, rmulti-start.1, ... (one per
//! command, the multi commands included) and OUT_DIR/completions/
//! rmulti.bash, _rmulti (zsh), rmulti.fish.
//!
//! An example rather than a hidden subcommand: clap_mangen and
//! clap_complete are build-time tools (dev-dependencies), so the installed
//! binary neither carries them nor grows a command users could trip over.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: package_assets OUT_DIR")?;
    let cmd = rmulti::cli::full_command();
    write_man_pages(&cmd, &out.join("man"))?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("create {}", completions.display()))?;
    for (shell, name) in [
        (Shell::Bash, "rmulti.bash"),
        (Shell::Zsh, "_rmulti"),
        (Shell::Fish, "rmulti.fish"),
    ] {
        let path = completions.join(name);
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        clap_complete::generate(shell, &mut cmd.clone(), "rmulti", &mut file);
    }
    Ok(())
}

/// `rmulti.1` and `rmulti-<command>.1` for each subcommand.
fn write_man_pages(cmd: &clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let cmd = cmd.clone().version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![("rmulti".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("rmulti-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(&*Box::leak(name.clone().into_boxed_str())) // a short-lived generator
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((name, sub));
    }
    // Reproducible: the date comes from bin/package (the last commit's).
    let date = std::env::var("RMULTI_MAN_DATE").unwrap_or_default();
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .date(date.clone())
            .source(format!("rmulti {}", env!("CARGO_PKG_VERSION")))
            .manual("rmulti manual")
            .render(&mut buf)
            .with_context(|| format!("render {name}"))?;
        std::fs::write(&path, buf).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
