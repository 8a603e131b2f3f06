//! The harness every integration test uses (in the manner of ripgrep's
//! `tests/util.rs`): a private `redis-server` per test, a temp dir with an
//! app file, a command builder around the real `rmulti` binary, and guards
//! that kill every process a test started when the test ends, even when it
//! panics.
//!
//! Nothing here needs a tool beyond `redis-server` itself: Redis is spoken
//! to with a tiny RESP client over `TcpStream` (no `redis-cli`), and task
//! messages are built by hand in the exact shape Celery 5.7 sends
//! (`fixtures/celery-5.7/task-v2-delay.json`).
//!
//! One file per idea, everything re-exported here:
//! - [`poll`]: deadline polling instead of sleeps;
//! - [`resp`]: the RESP reply type and one Redis connection;
//! - [`redis`]: the private `redis-server` and the results it holds;
//! - [`envelope`]: Celery-shaped task messages and publishing them;
//! - [`app`]: the test dir and the app file in it;
//! - [`command`]: the `rmulti` command builder, every run with a deadline;
//! - [`procs`]: `/proc`, pidfiles, signals, root;
//! - [`guard`]: guards that SIGKILL whatever a test started;
//! - [`broker`]: what is still in flight, task states;
//! - [`node`]: one worker node started the way most tests start it.
//!
//! Conventions shared with `tests/python/conftest.py`:
//! - broker = db 0, result backend = db 1 of the test's own server
//!   ([`BROKER_DB`], [`RESULT_DB`]), as in the captured fixtures;
//! - the app file is `<name>.toml` in the test dir, with the builtins under
//!   the seed's names `proj.tasks.add`, `mul`, `xsum`, `sleep`, `echo`,
//!   `fail`, `noop`.
//!
//! Include it with `mod common;` and `use common::*;`. Each test crate uses
//! only part of it, hence the `dead_code` allowance below.
#![allow(dead_code)]

pub mod app;
pub mod broker;
pub mod command;
pub mod envelope;
pub mod guard;
pub mod node;
pub mod poll;
pub mod procs;
pub mod redis;
pub mod resp;

// Each test crate uses only part of the harness.
#[allow(unused_imports)]
pub use self::{
    app::*, broker::*, command::*, envelope::*, guard::*, node::*, poll::*, procs::*, redis::*,
    resp::*,
};
