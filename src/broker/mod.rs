//! The Redis transport, kombu-compatible: queue keys and priorities, atomic
//! reservation into kombu's `unacked` structures, ack, restore, the ETA park,
//! the dead-letter list, and the result backend writes.
//!
//! Every call here is one round trip with a timeout; nothing blocks longer
//! than `BLOCK_TIMEOUT` so that shutdown stays prompt.

pub mod backend;
pub mod connection;
pub mod keys;
pub mod lua;
pub mod parked;
pub mod piggyback;
pub mod reserve;
pub mod revoked;
pub mod sentinel;
pub mod sweep;
pub mod url;

pub use connection::{connect, BrokerError, Connections};
pub use reserve::Reserved;
