//! Per-process log files in Celery's record format
//! (`[2026-11-23 11:39:37,941: INFO/MainProcess] ...`).
