//! Running one task to an outcome: natively (builtin, exec, native function)
//! or in the child's Python host, whose lifecycle this module owns. Nothing
//! here touches Redis; a host that dies mid-task gives a `Leave`.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use super::triage::Plan;
use super::{ChildSpec, Leave};
use crate::app::AppConfig;
use crate::protocol::time::duration_secs;
use crate::protocol::{pyrepr, ExceptionInfo, ResultMeta, TaskMessage};
use crate::tasks::python::{self, Host, RunError};
use crate::tasks::{Executor, Invocation, TaskSpec};

/// What is left to do with a message once its task ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finish it: store `result` (result meta JSON; none when ignored), ack.
    /// `keep`: also keep a record in the dead-letter list, for this reason
    /// (a builtin called with the wrong arguments: bad input, not a task
    /// that ran and failed).
    Finish {
        result: Option<String>,
        keep: Option<String>,
    },
    /// Reject(requeue=True) under acks_late: back on its queue.
    Requeue,
}

/// Runs tasks for one child; holds its Python host when the app has one.
pub struct Runner<'a> {
    spec: &'a ChildSpec,
    host: Option<Host>,
}

impl<'a> Runner<'a> {
    pub fn new(spec: &'a ChildSpec) -> Runner<'a> {
        Runner { spec, host: None }
    }

    /// Starts the Python host if the app has Python tasks. The error is
    /// the message for the launcher's terminal (the traceback's end).
    pub fn start_host(&mut self) -> Result<(), String> {
        let Some(app) = &self.spec.app.python else {
            return Ok(());
        };
        let host = Host::start(&app.host_config(), &self.spec.node).map_err(|e| e.to_string())?;
        tracing::debug!("Python host pid:{} ready", host.pid);
        self.host = Some(host);
        Ok(())
    }

    /// Runs `task` as `plan` says; `raw` is its message (what the host gets).
    pub fn run(
        &mut self,
        task: &TaskMessage,
        spec: &TaskSpec,
        plan: &Plan,
        raw: &str,
    ) -> Result<Outcome, Leave> {
        if plan.in_host {
            let done = self.run_in_host(raw, plan.soft_limit.and_then(duration_secs))?;
            return Ok(host_outcome(&self.spec.app, task, plan, done, raw));
        }
        Ok(run_native(task, spec, plan))
    }

    /// Runs a task in the Python host. Returns only with the host's answer:
    /// when the host dies mid-task this child leaves the same way, so the
    /// main process records the task's loss (WorkerLostError, or a requeue
    /// under acks_late + reject_on_worker_lost) and starts a new child,
    /// which starts a new host.
    fn run_in_host(
        &mut self,
        raw: &str,
        soft_limit: Option<Duration>,
    ) -> Result<python::Done, Leave> {
        for attempt in 0..2 {
            if self.host.is_none() || attempt > 0 {
                if let Err(e) = self.start_host() {
                    tracing::error!("Cannot restart the Python host: {e}");
                    return Err(Leave::Code(1));
                }
            }
            let Some(host) = self.host.as_mut() else {
                return Err(Leave::Code(1));
            };
            match host.run(raw, soft_limit) {
                Ok(done) => return Ok(done),
                Err(RunError::NotRunning) => {
                    tracing::error!(
                        "Python host pid:{} had exited; starting a new one",
                        host.pid
                    );
                    self.host = None;
                }
                Err(RunError::Died(status)) => {
                    tracing::error!(
                        "Python host pid:{} exited with '{}' while running a task",
                        host.pid,
                        python::describe_status(status)
                    );
                    self.host = None;
                    return Err(Leave::Like(status));
                }
                Err(RunError::Io(e)) => {
                    tracing::error!("Python host pid:{}: {e}", host.pid);
                    return Err(Leave::Code(1));
                }
                Err(RunError::Protocol(e)) => {
                    tracing::error!("Python host pid:{}: {e}", host.pid);
                    return Err(Leave::Code(1));
                }
            }
        }
        tracing::error!("The Python host keeps exiting before it gets a task");
        Err(Leave::Code(1))
    }
}

/// The host's tracer stored the outcome and logged it; what is left here is
/// the message (and a FAILURE when the host itself failed around the task).
/// When only Python can write the app's backend, the Outcome carries no
/// result: the host stored it, and a failure around the task goes to the
/// template (`records`).
fn host_outcome(
    app: &AppConfig,
    task: &TaskMessage,
    plan: &Plan,
    done: python::Done,
    raw: &str,
) -> Outcome {
    let ignore_result = plan.started.ignore_result;
    let mut meta = None;
    if let Some(error) = &done.error {
        tracing::error!(
            "Python host failed around task {}[{}]:\n{}",
            task.display_name(),
            task.id,
            error.trim_end()
        );
        if !ignore_result {
            let last = error
                .trim_end()
                .lines()
                .last()
                .unwrap_or("error")
                .to_string();
            let exc = ExceptionInfo::new("RuntimeError", Some("builtins"), vec![json!(last)]);
            meta = Some(ResultMeta::failure(
                task,
                exc,
                Some(error.clone()),
                Utc::now(),
            ));
        }
    }
    // Reject(requeue=True) puts the message back only under acks_late: with
    // early ack Celery had acked it at the start.
    if plan.started.acks_late && done.state == "REJECTED" && done.requeue {
        return Outcome::Requeue;
    }
    let meta = super::records::for_redis(app, meta, Some(task), Some(raw));
    Outcome::Finish {
        result: meta.as_ref().map(ResultMeta::to_json).or(done.meta),
        keep: None,
    }
}

/// Runs a builtin, exec or native task here, logging its outcome as Celery does.
fn run_native(task: &TaskMessage, spec: &TaskSpec, plan: &Plan) -> Outcome {
    let inv = Invocation {
        id: &task.id,
        task: &task.task,
        args: &task.args,
        kwargs: &task.kwargs,
        soft_time_limit: plan.soft_limit.and_then(duration_secs),
    };
    let begun = Instant::now();
    let result = spec.executor.run(&inv);
    let runtime = begun.elapsed().as_secs_f64();
    let meta = match &result {
        Ok(value) => {
            tracing::info!(
                "Task {}[{}] succeeded in {}s: {}",
                task.display_name(),
                task.id,
                runtime,
                pyrepr::repr(value)
            );
            ResultMeta::success(task, value.clone(), Utc::now())
        }
        Err(err) => {
            tracing::error!(
                "Task {}[{}] raised unexpected: {}\n{}",
                task.display_name(),
                task.id,
                err.exc.repr(),
                err.traceback.trim_end()
            );
            ResultMeta::failure(
                task,
                err.exc.clone(),
                Some(err.traceback.clone()),
                Utc::now(),
            )
        }
    };
    let keep = match (&result, &spec.executor) {
        (Err(err), Executor::Builtin(_)) if err.exc.exc_type == "TypeError" => Some(format!(
            "wrong arguments for builtin {}: {}",
            task.task,
            err.exc.repr()
        )),
        _ => None,
    };
    Outcome::Finish {
        result: (!plan.started.ignore_result).then(|| meta.to_json()),
        keep,
    }
}
