//! Python `repr()` of JSON values, for Celery's log lines (`succeeded in
//! 0.01s: 'abc'`) and for synthesising `argsrepr`/`kwargsrepr`.

use serde_json::{Map, Value};

pub fn repr(value: &Value) -> String {
    let _ = value;
    String::new()
}

/// `(2, 3)` / `(1,)` / `()`: the repr of args as a tuple.
pub fn args_repr(args: &[Value]) -> String {
    let _ = args;
    String::new()
}

pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let _ = kwargs;
    String::new()
}
