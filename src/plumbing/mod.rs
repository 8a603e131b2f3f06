//! Process plumbing that knows nothing of rmulti: pipes and non-blocking
//! reads (`pipe`), line splitting (`lines`), dying with the parent
//! (`deathsig`), what `/proc` says about a process (`process`), words of
//! memory shared across fork (`shared`), and two uses of them: a child's
//! progress through a batch (`progress`) and which child of a pool ran
//! last (`affinity`).
//!
//! It depends on no other module of this crate, so every layer (multi, node,
//! child, tasks) may use it without an import circle.

pub mod affinity;
pub mod deathsig;
pub mod lines;
pub mod pipe;
pub mod process;
pub mod progress;
pub mod shared;
