//! A pool child: its own Redis connection, the consume loop (reserve one
//! message when idle, execute, store the result, ack), and status reports to
//! the main process over a pipe.
