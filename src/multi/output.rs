//! What multi prints (spec §2, §9): the splash line, "note" lines that
//! `--quiet` suppresses, `--verbose` info lines, and the colours, which are
//! used only when stdout is a terminal and NO_COLOR is unset (Celery colours
//! even redirected output, §2.3).

use std::io::{IsTerminal, Write};

use super::argv::Reserved;

#[derive(Debug, Clone, Copy)]
pub enum Colour {
    Cyan,
    Blue,
    Green,
    Red,
    Magenta,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Cyan => "\x1b[1;36m",
            Colour::Blue => "\x1b[1;34m",
            Colour::Green => "\x1b[1;32m",
            Colour::Red => "\x1b[1;31m",
            Colour::Magenta => "\x1b[1;35m",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub quiet: bool,
    pub verbose: bool,
    pub nosplash: bool,
    pub colour: bool,
}

impl Output {
    pub fn new(reserved: Reserved) -> Self {
        let colour = !reserved.no_color
            && std::env::var_os("NO_COLOR").is_none()
            && std::io::stdout().is_terminal();
        Self {
            quiet: reserved.quiet,
            verbose: reserved.verbose && !reserved.quiet,
            nosplash: reserved.nosplash,
            colour,
        }
    }

    pub fn paint(&self, colour: Colour, text: &str) -> String {
        if self.colour {
            format!("{}{}\x1b[0m", colour.code(), text)
        } else {
            text.to_string()
        }
    }

    pub fn ok(&self) -> String {
        self.paint(Colour::Green, "OK")
    }

    pub fn failed(&self) -> String {
        self.paint(Colour::Red, "FAILED")
    }

    fn down(&self) -> String {
        self.paint(Colour::Magenta, "DOWN")
    }

    /// `> w1@vm: DOWN`: the note for a node that is not (or no longer) running.
    pub fn note_down(&self, node: &str) {
        self.note(&format!("> {node}: {}", self.down()));
    }

    /// Output of `show`/`names`/`get`/`expand`/`help`: never suppressed.
    pub fn say(&self, text: &str) {
        write_out(text, true);
    }

    /// A note line (suppressed by `--quiet`).
    pub fn note(&self, text: &str) {
        if !self.quiet {
            write_out(text, true);
        }
    }

    /// A note without a newline; flushed so the line shows while we wait.
    pub fn note_partial(&self, text: &str) {
        if !self.quiet {
            write_out(text, false);
        }
    }

    pub fn info(&self, text: &str) {
        if self.verbose {
            write_out(text, true);
        }
    }

    pub fn splash(&self) {
        if !self.nosplash {
            let line = format!("rmulti multi v{}", env!("CARGO_PKG_VERSION"));
            self.note(&self.paint(Colour::Cyan, &line));
        }
    }

    /// Diagnostics always go to stderr, whatever `--quiet` says.
    pub fn error(&self, text: &str) {
        let _ = std::io::stdout().flush();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }
}

fn write_out(text: &str, newline: bool) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) must not abort stopping or starting nodes.
    let _ = if newline {
        writeln!(out, "{text}")
    } else {
        write!(out, "{text}")
    };
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_when_enabled() {
        let mut out = Output::new(Reserved::default());
        out.colour = true;
        assert_eq!(out.ok(), "\x1b[1;32mOK\x1b[0m");
        assert_eq!(out.failed(), "\x1b[1;31mFAILED\x1b[0m");
        assert_eq!(out.down(), "\x1b[1;35mDOWN\x1b[0m");
        assert_eq!(
            out.paint(Colour::Blue, "> Stopping nodes..."),
            "\x1b[1;34m> Stopping nodes...\x1b[0m"
        );
        out.colour = false;
        assert_eq!(out.ok(), "OK");
        let quiet = Output::new(Reserved {
            quiet: true,
            verbose: true,
            ..Reserved::default()
        });
        assert!(!quiet.verbose);
        let no_colour = Output::new(Reserved {
            no_color: true,
            ..Reserved::default()
        });
        assert!(!no_colour.colour);
    }
}
