//! The start-up banner and task list, in Celery's shape. Unlike Celery it is
//! also written to the main log, where an operator will look for it.

use super::config::NodeConfig;

pub fn banner(cfg: &NodeConfig) -> String {
    let app = &cfg.app;
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    let mut out = String::new();
    out.push_str(&format!(
        " -------------- {} v{} (rmulti)\n",
        cfg.node,
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str("--- ***** -----\n");
    out.push_str(&format!(
        "-- ******* ---- {} {}\n",
        std::env::consts::OS,
        now
    ));
    out.push_str("- *** --- * ---\n");
    out.push_str("- ** ---------- [config]\n");
    out.push_str(&format!(
        "- ** ---------- .> app:         {} ({})\n",
        app.name,
        app.path.display()
    ));
    for (label, value) in app.banner_lines() {
        let label = format!("{label}:");
        out.push_str(&format!("- ** ---------- .> {label:<12} {value}\n"));
    }
    // Celery's wording for an autoscaled pool.
    let concurrency = match cfg.autoscale {
        Some(a) => format!("{{min={}, max={}}}", a.min, a.max),
        None => cfg.concurrency.to_string(),
    };
    out.push_str(&format!(
        "- *** --- * --- .> concurrency: {concurrency} (prefork)\n"
    ));
    out.push_str(if cfg.args.task_events || cfg.app.worker_send_task_events {
        "-- ******* ---- .> task events: ON\n"
    } else {
        "-- ******* ---- .> task events: OFF (enable -E to monitor tasks in this worker)\n"
    });
    out.push_str("--- ***** -----\n");
    out.push_str(" -------------- [queues]\n");
    for q in &cfg.queues {
        out.push_str(&format!(
            "                .> {q:<16} exchange={q}(direct) key={q}\n"
        ));
    }
    out.push_str("\n[tasks]\n");
    // Celery's banner leaves out its own tasks (celery.chord_unlock, ...),
    // which a Python app registers too.
    for name in app.tasks.names().filter(|n| !n.starts_with("celery.")) {
        out.push_str(&format!("  . {name}\n"));
    }
    out
}
