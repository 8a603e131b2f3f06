//! The Redis transport, kombu-compatible: queue keys and priorities, atomic
//! reservation into kombu's `unacked` structures, ack, restore, the ETA park,
//! the dead-letter list, and the result backend writes.
