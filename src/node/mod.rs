//! The node main process ("supervisor"): detach, pidfile, the supervisor loop
//! and its signal handlers. It never consumes tasks and stays single-threaded
//! so that `fork()` is safe.
pub mod identity;
