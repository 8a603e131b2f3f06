//! The node's own operations on its queues in Redis: `--purge` and the
//! depth the autoscaler reads. Keys are kombu's (a list per priority step).

use redis::Connection;

use crate::broker::keys;

/// Deletes every message waiting in `queues` (each priority list), as
/// kombu's `queue_purge`; returns how many there were.
pub fn purge(con: &mut Connection, queues: &[String]) -> redis::RedisResult<usize> {
    let lists = keys::consume_order(queues);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for key in &lists {
        pipe.cmd("LLEN").arg(key);
        pipe.cmd("DEL").arg(key).ignore();
    }
    let lengths: Vec<usize> = pipe.query(con)?;
    Ok(lengths.into_iter().sum())
}

/// Messages waiting in `queues` (every priority list).
pub fn depth(con: &mut Connection, queues: &[String]) -> redis::RedisResult<usize> {
    let mut pipe = redis::pipe();
    for key in keys::consume_order(queues) {
        pipe.cmd("LLEN").arg(key);
    }
    let lengths: Vec<usize> = pipe.query(con)?;
    Ok(lengths.into_iter().sum())
}

/// Celery's line for `--purge` (`celery/apps/worker.py`), printed only
/// when something was erased.
pub fn purge_line(count: usize) -> Option<String> {
    let noun = if count == 1 { "message" } else { "messages" };
    (count > 0).then(|| format!("purge: Erased {count} {noun} from the queue."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_line_is_celerys() {
        assert_eq!(purge_line(0), None);
        assert_eq!(
            purge_line(1).as_deref(),
            Some("purge: Erased 1 message from the queue.")
        );
        assert_eq!(
            purge_line(3).as_deref(),
            Some("purge: Erased 3 messages from the queue.")
        );
    }
}
