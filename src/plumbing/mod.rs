//! Process plumbing that knows nothing of rmulti: pipes and non-blocking
//! reads (`pipe`), line splitting (`lines`), dying with the parent
//! (`deathsig`), and what `/proc` says about a process (`process`).
//!
//! It depends on no other module of this crate, so every layer (multi, node,
//! child, tasks) may use it without an import circle.

pub mod deathsig;
pub mod lines;
pub mod pipe;
pub mod process;
