//! Worker events from the node main process (`worker-online`,
//! `-heartbeat`, `-offline`, and the heartbeat that answers a `heartbeat`
//! broadcast), encoded as Celery's `EventDispatcher` sends them.

use crate::protocol::event::{self, Event, Publish, Sender, Stamped};

pub struct Events {
    sender: Sender,
}

impl Events {
    pub fn new(node: &str) -> Events {
        Events {
            sender: Sender {
                hostname: node.to_string(),
                utcoffset: event::utcoffset_hours(),
                pid: std::process::id(),
            },
        }
    }

    /// The PUBLISH for `e` stamped with `clock` and the time now.
    pub fn publish(&self, e: Event, clock: u64, db: i64) -> Publish {
        let stamped = Stamped {
            event: e,
            clock,
            timestamp: crate::broker::reserve::now_secs(),
        };
        let tag = uuid::Uuid::new_v4().to_string();
        Publish::single(&self.sender, &stamped, db, &tag)
    }
}
