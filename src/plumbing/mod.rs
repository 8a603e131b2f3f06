//! Process plumbing that knows nothing of rmulti: pipes and non-blocking
//! reads (`pipe`), line splitting (`lines`), dying with the parent
//! (`deathsig`), what `/proc` says about a process (`process`), and a
//! word of memory shared with a forked child (`progress`).
//!
//! It depends on no other module of this crate, so every layer (multi, node,
//! child, tasks) may use it without an import circle.

pub mod deathsig;
pub mod lines;
pub mod pipe;
pub mod process;
pub mod progress;
