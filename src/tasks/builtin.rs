//! The builtin tasks: the seed's `add`, `mul`, `xsum`, and `noop`, `sleep`,
//! `echo`, `fail` for tests and benchmarks. Arguments follow Python's rules
//! (positional or by keyword; a wrong call is a `TypeError`).

use super::{Invocation, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Add,
    Mul,
    Xsum,
    Noop,
    Sleep,
    Echo,
    Fail,
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Builtin> {
        let _ = name;
        None
    }

    pub fn run(self, inv: &Invocation) -> Outcome {
        let _ = inv;
        Ok(serde_json::Value::Null)
    }
}
