//! The errors of the multi front end: bad command lines and bad templates.
//! Each one becomes a message on stderr and the exit status `exit_code` says.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MultiError {
    #[error("invalid option '-': an option needs a name")]
    LoneDash,
    #[error("option {0}: only one ':namespace' is allowed")]
    TooManyNamespaces(String),
    #[error(
        "unknown format %{key} in {template:?} (write %% for a literal %; did a value get expanded twice?)"
    )]
    UnknownFormat { key: char, template: String },
    #[error("node indexes start at 1, got {0:?}")]
    IndexZero(String),
    #[error("no node at index {0:?}")]
    NoNodeAtIndex(String),
    #[error("bad node range {0:?}: expected START-END with two numbers")]
    BadRange(String),
    #[error("{command}: missing {what}")]
    MissingArgument {
        command: &'static str,
        what: &'static str,
    },
    #[error("bad --timeout value {0:?}: expected a number of seconds")]
    BadTimeout(String),
    #[error("signal 0 cannot stop a node")]
    SignalZero,
    #[error("cannot find the rmulti executable: {0}")]
    CurrentExe(std::io::Error),
}

impl MultiError {
    /// Bad command lines and templates are usage errors; not finding our
    /// own executable is a runtime failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            MultiError::CurrentExe(_) => crate::exit::FAILURE,
            _ => crate::exit::USAGE,
        }
    }
}
