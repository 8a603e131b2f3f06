//! rmulti: a drop-in for `celery multi` and Celery's prefork worker on Redis.
//!
//! The library owns everything; `main.rs` only parses the command line and
//! dispatches. Dependencies point one way:
//! `multi → node → child → (broker, protocol, tasks)`; `protocol` and `broker`
//! know nothing about processes.

pub mod app;
pub mod broker;
pub mod child;
pub mod cli;
pub mod client;
pub mod control;
pub mod exit;
pub mod logging;
pub mod multi;
pub mod node;
pub mod plumbing;
pub mod protocol;
pub mod signals;
pub mod tasks;
