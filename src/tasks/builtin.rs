//! The builtin tasks: the seed's `add`, `mul`, `xsum`, and `noop`, `sleep`,
//! `echo`, `fail` for tests and benchmarks. Arguments follow Python's rules
//! (positional or by keyword; a wrong call is a `TypeError`).

use std::time::Duration;

use serde_json::{Number, Value};

use super::{Invocation, Outcome, TaskError};

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

/// Repetition results larger than this fail with `MemoryError` instead of
/// letting one message exhaust the child's memory.
const MAX_REPEAT_BYTES: u128 = 256 << 20;

impl Builtin {
    /// Every builtin, in the order error messages list them.
    pub const ALL: [Builtin; 7] = [
        Builtin::Add,
        Builtin::Mul,
        Builtin::Xsum,
        Builtin::Noop,
        Builtin::Sleep,
        Builtin::Echo,
        Builtin::Fail,
    ];

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The builtin's name, as `from_name` accepts it and tracebacks show it.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Add => "add",
            Builtin::Mul => "mul",
            Builtin::Xsum => "xsum",
            Builtin::Noop => "noop",
            Builtin::Sleep => "sleep",
            Builtin::Echo => "echo",
            Builtin::Fail => "fail",
        }
    }

    pub fn run(self, inv: &Invocation) -> Outcome {
        let name = self.name();
        match self {
            Builtin::Add => {
                let [x, y] = bind(name, &["x", "y"], inv)?;
                add(name, &x, &y)
            }
            Builtin::Mul => {
                let [x, y] = bind(name, &["x", "y"], inv)?;
                mul(name, &x, &y)
            }
            Builtin::Xsum => {
                let [numbers] = bind(name, &["numbers"], inv)?;
                xsum(name, &numbers)
            }
            // `noop(*args, **kwargs)` accepts anything.
            Builtin::Noop => Ok(Value::Null),
            Builtin::Sleep => {
                let [seconds] = bind(name, &["seconds"], inv)?;
                sleep(name, seconds, inv.soft_time_limit)
            }
            Builtin::Echo => {
                let [value] = bind(name, &["value"], inv)?;
                Ok(value)
            }
            Builtin::Fail => {
                let [message] = bind(name, &["message"], inv)?;
                Err(fail(name, message))
            }
        }
    }
}

/// Matches `args`/`kwargs` to the parameters as CPython does for
/// `def name(p0, p1, ...)`, with CPython's messages for every misuse.
fn bind<const N: usize>(
    name: &str,
    params: &[&str; N],
    inv: &Invocation,
) -> Result<[Value; N], TaskError> {
    let mut slots: [Option<Value>; N] = std::array::from_fn(|_| None);
    for (slot, arg) in slots.iter_mut().zip(inv.args) {
        *slot = Some(arg.clone());
    }
    for (key, value) in inv.kwargs {
        let Some(index) = params.iter().position(|p| p == key) else {
            return Err(TaskError::type_error(
                name,
                format!("{name}() got an unexpected keyword argument '{key}'"),
            ));
        };
        if slots[index].is_some() {
            return Err(TaskError::type_error(
                name,
                format!("{name}() got multiple values for argument '{key}'"),
            ));
        }
        slots[index] = Some(value.clone());
    }
    if inv.args.len() > N {
        let takes = if N == 1 {
            "1 positional argument".to_string()
        } else {
            format!("{N} positional arguments")
        };
        let given = inv.args.len();
        let verb = if given == 1 { "was" } else { "were" };
        return Err(TaskError::type_error(
            name,
            format!("{name}() takes {takes} but {given} {verb} given"),
        ));
    }
    let missing: Vec<String> = params
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| slot.is_none())
        .map(|(p, _)| format!("'{p}'"))
        .collect();
    if !missing.is_empty() {
        let what = if missing.len() == 1 {
            "argument"
        } else {
            "arguments"
        };
        return Err(TaskError::type_error(
            name,
            format!(
                "{name}() missing {} required positional {what}: {}",
                missing.len(),
                python_list(&missing)
            ),
        ));
    }
    Ok(slots.map(|slot| slot.unwrap_or(Value::Null)))
}

/// `'a'`, `'a' and 'b'`, `'a', 'b', and 'c'` — CPython's wording.
fn python_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

/// Python's type name for a JSON value as Celery's JSON decoder produces it.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// A numeric operand; `bool` is an `int` in Python.
enum Num {
    Int(i128),
    Float(f64),
}

fn as_num(value: &Value) -> Option<Num> {
    match value {
        Value::Bool(b) => Some(Num::Int(i128::from(*b))),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(Num::Int(i128::from(i)))
            } else if let Some(u) = n.as_u64() {
                Some(Num::Int(i128::from(u)))
            } else {
                n.as_f64().map(Num::Float)
            }
        }
        _ => None,
    }
}

fn as_f64(n: &Num) -> f64 {
    match *n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

/// Ints beyond JSON's 64-bit range become floats rather than failing:
/// Python would grow a bignum, which JSON clients read back as a number anyway.
fn int_value(i: i128) -> Value {
    if let Ok(v) = i64::try_from(i) {
        Value::from(v)
    } else if let Ok(v) = u64::try_from(i) {
        Value::from(v)
    } else {
        Value::from(i as f64)
    }
}

fn float_value(task: &str, f: f64) -> Outcome {
    Number::from_f64(f).map(Value::Number).ok_or_else(|| {
        TaskError::raised(
            task,
            "OverflowError",
            "builtins",
            "result is not a finite number",
        )
    })
}

fn arith(task: &str, op: char, a: &Num, b: &Num) -> Outcome {
    match (a, b, op) {
        (Num::Int(x), Num::Int(y), '+') => Ok(x
            .checked_add(*y)
            .map_or_else(|| Value::from(*x as f64 + *y as f64), int_value)),
        (Num::Int(x), Num::Int(y), _) => Ok(x
            .checked_mul(*y)
            .map_or_else(|| Value::from(*x as f64 * *y as f64), int_value)),
        (a, b, '+') => float_value(task, as_f64(a) + as_f64(b)),
        (a, b, _) => float_value(task, as_f64(a) * as_f64(b)),
    }
}

fn unsupported(task: &str, op: char, x: &Value, y: &Value) -> TaskError {
    TaskError::type_error(
        task,
        format!(
            "unsupported operand type(s) for {op}: '{}' and '{}'",
            type_name(x),
            type_name(y)
        ),
    )
}

fn add(task: &str, x: &Value, y: &Value) -> Outcome {
    if let (Some(a), Some(b)) = (as_num(x), as_num(y)) {
        return arith(task, '+', &a, &b);
    }
    match (x, y) {
        (Value::String(a), Value::String(b)) => Ok(Value::String(format!("{a}{b}"))),
        (Value::Array(a), Value::Array(b)) => {
            Ok(Value::Array(a.iter().chain(b).cloned().collect()))
        }
        (Value::String(_), other) => Err(TaskError::type_error(
            task,
            format!(
                "can only concatenate str (not \"{}\") to str",
                type_name(other)
            ),
        )),
        (Value::Array(_), other) => Err(TaskError::type_error(
            task,
            format!(
                "can only concatenate list (not \"{}\") to list",
                type_name(other)
            ),
        )),
        _ => Err(unsupported(task, '+', x, y)),
    }
}

fn mul(task: &str, x: &Value, y: &Value) -> Outcome {
    match (as_num(x), as_num(y)) {
        (Some(a), Some(b)) => arith(task, '*', &a, &b),
        (None, Some(n)) => repeat(task, x, &n).unwrap_or_else(|| Err(unsupported(task, '*', x, y))),
        (Some(n), None) => repeat(task, y, &n).unwrap_or_else(|| Err(unsupported(task, '*', x, y))),
        (None, None) => match (x, y) {
            (Value::String(_) | Value::Array(_), other)
            | (other, Value::String(_) | Value::Array(_)) => Err(TaskError::type_error(
                task,
                format!(
                    "can't multiply sequence by non-int of type '{}'",
                    type_name(other)
                ),
            )),
            _ => Err(unsupported(task, '*', x, y)),
        },
    }
}

/// `seq * n` for a str or list; `None` when `seq` is neither, so the caller
/// can name both operands in their original order.
fn repeat(task: &str, seq: &Value, n: &Num) -> Option<Outcome> {
    if !matches!(seq, Value::String(_) | Value::Array(_)) {
        return None;
    }
    Some(repeat_seq(task, seq, n))
}

fn repeat_seq(task: &str, seq: &Value, n: &Num) -> Outcome {
    let count = match n {
        Num::Int(i) => *i,
        Num::Float(_) => {
            return Err(TaskError::type_error(
                task,
                "can't multiply sequence by non-int of type 'float'",
            ));
        }
    };
    if count > i128::from(i64::MAX) {
        return Err(TaskError::raised(
            task,
            "OverflowError",
            "builtins",
            "cannot fit 'int' into an index-sized integer",
        ));
    }
    let count = usize::try_from(count.max(0)).unwrap_or(0);
    let unit = match seq {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len() * 16,
        _ => 0,
    };
    if unit as u128 * count as u128 > MAX_REPEAT_BYTES {
        return Err(TaskError::raised(task, "MemoryError", "builtins", ""));
    }
    Ok(match seq {
        Value::String(s) => Value::String(s.repeat(count)),
        Value::Array(a) => Value::Array(a.iter().cloned().cycle().take(a.len() * count).collect()),
        _ => Value::Null,
    })
}

/// `sum(numbers)`: folds `+` from int 0 over the iterable, so the errors
/// are exactly Python's (`sum(["a"])` is `0 + "a"`).
fn xsum(task: &str, numbers: &Value) -> Outcome {
    let items: Vec<Value> = match numbers {
        Value::Array(a) => a.clone(),
        Value::String(s) => s.chars().map(|c| Value::String(c.to_string())).collect(),
        Value::Object(o) => o.keys().map(|k| Value::String(k.clone())).collect(),
        other => {
            return Err(TaskError::type_error(
                task,
                format!("'{}' object is not iterable", type_name(other)),
            ));
        }
    };
    items
        .iter()
        .try_fold(Value::from(0), |acc, item| add(task, &acc, item))
}

fn sleep(task: &str, seconds: Value, soft_limit: Option<Duration>) -> Outcome {
    let secs = match as_num(&seconds) {
        Some(n) => as_f64(&n),
        None => {
            return Err(TaskError::type_error(
                task,
                format!(
                    "'{}' object cannot be interpreted as an integer",
                    type_name(&seconds)
                ),
            ));
        }
    };
    if secs < 0.0 {
        return Err(TaskError::value_error(
            task,
            "sleep length must be non-negative",
        ));
    }
    let Ok(wanted) = Duration::try_from_secs_f64(secs) else {
        return Err(TaskError::raised(
            task,
            "OverflowError",
            "builtins",
            "sleep length is too large",
        ));
    };
    match soft_limit {
        Some(limit) if limit < wanted => {
            std::thread::sleep(limit);
            Err(TaskError::soft_time_limit_exceeded(task))
        }
        _ => {
            std::thread::sleep(wanted);
            Ok(seconds)
        }
    }
}

/// `raise ValueError(message)`: the message is stored as given (any JSON),
/// and shown as Python's `str()` of it in the traceback.
fn fail(task: &str, message: Value) -> TaskError {
    let shown = match &message {
        Value::String(s) => s.clone(),
        other => crate::protocol::pyrepr::python_repr(other),
    };
    let mut err = TaskError::value_error(task, shown);
    err.exc.exc_message = vec![message];
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn call(b: Builtin, args: Value, kwargs: Value) -> Outcome {
        call_limited(b, args, kwargs, None)
    }

    fn call_limited(b: Builtin, args: Value, kwargs: Value, soft: Option<Duration>) -> Outcome {
        let args = args.as_array().unwrap().clone();
        let kwargs: Map<String, Value> = kwargs.as_object().unwrap().clone();
        let inv = Invocation {
            id: "id-1",
            task: "t",
            args: &args,
            kwargs: &kwargs,
            soft_time_limit: soft,
        };
        b.run(&inv)
    }

    fn type_error(outcome: Outcome) -> String {
        let err = outcome.unwrap_err();
        assert_eq!(err.exc.exc_type, "TypeError");
        assert_eq!(err.exc.exc_module.as_deref(), Some("builtins"));
        err.exc.exc_message[0].as_str().unwrap().to_string()
    }

    #[test]
    fn names_round_trip() {
        for builtin in Builtin::ALL {
            assert_eq!(Builtin::from_name(builtin.name()), Some(builtin));
        }
        assert_eq!(Builtin::from_name("nope"), None);
    }

    #[test]
    fn add_follows_python() {
        assert_eq!(
            call(Builtin::Add, json!([2, 3]), json!({})).unwrap(),
            json!(5)
        );
        assert_eq!(
            call(Builtin::Add, json!([2, 0.5]), json!({})).unwrap(),
            json!(2.5)
        );
        assert_eq!(
            call(Builtin::Add, json!([true, true]), json!({})).unwrap(),
            json!(2)
        );
        assert_eq!(
            call(Builtin::Add, json!(["ab", "cd"]), json!({})).unwrap(),
            json!("abcd")
        );
        assert_eq!(
            call(Builtin::Add, json!([[1], [2, 3]]), json!({})).unwrap(),
            json!([1, 2, 3])
        );
        assert_eq!(
            call(Builtin::Add, json!([i64::MAX, 1]), json!({})).unwrap(),
            json!(9223372036854775808u64)
        );
        assert_eq!(
            call(Builtin::Add, json!([u64::MAX, 1]), json!({})).unwrap(),
            json!(u64::MAX as f64 + 1.0)
        );
        assert_eq!(
            call(Builtin::Add, json!([]), json!({"y": 1, "x": 2})).unwrap(),
            json!(3)
        );
        assert_eq!(
            call(Builtin::Add, json!([1]), json!({"y": 1})).unwrap(),
            json!(2)
        );
    }

    #[test]
    fn add_type_errors() {
        assert_eq!(
            type_error(call(Builtin::Add, json!([1, "a"]), json!({}))),
            "unsupported operand type(s) for +: 'int' and 'str'"
        );
        assert_eq!(
            type_error(call(Builtin::Add, json!([null, {}]), json!({}))),
            "unsupported operand type(s) for +: 'NoneType' and 'dict'"
        );
        assert_eq!(
            type_error(call(Builtin::Add, json!(["a", 1.5]), json!({}))),
            "can only concatenate str (not \"float\") to str"
        );
        assert_eq!(
            type_error(call(Builtin::Add, json!([[1], true]), json!({}))),
            "can only concatenate list (not \"bool\") to list"
        );
    }

    #[test]
    fn call_errors_match_cpython() {
        assert_eq!(
            type_error(call(Builtin::Add, json!([1]), json!({}))),
            "add() missing 1 required positional argument: 'y'"
        );
        assert_eq!(
            type_error(call(Builtin::Add, json!([]), json!({}))),
            "add() missing 2 required positional arguments: 'x' and 'y'"
        );
        assert_eq!(
            type_error(call(Builtin::Add, json!([1, 2, 3]), json!({}))),
            "add() takes 2 positional arguments but 3 were given"
        );
        assert_eq!(
            type_error(call(Builtin::Echo, json!([1, 2]), json!({}))),
            "echo() takes 1 positional argument but 2 were given"
        );
        assert_eq!(
            type_error(call(Builtin::Add, json!([1, 2]), json!({"z": 3}))),
            "add() got an unexpected keyword argument 'z'"
        );
        assert_eq!(
            type_error(call(Builtin::Add, json!([1, 2]), json!({"x": 3}))),
            "add() got multiple values for argument 'x'"
        );
        let err = call(Builtin::Add, json!([1]), json!({})).unwrap_err();
        assert_eq!(
            err.traceback,
            "Traceback (most recent call last):\n  File \"rmulti/builtin\", line 1, in add\n\
             TypeError: add() missing 1 required positional argument: 'y'\n"
        );
    }

    #[test]
    fn python_list_wording() {
        let items: Vec<String> = ["'a'", "'b'", "'c'"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(python_list(&items), "'a', 'b', and 'c'");
    }

    #[test]
    fn mul_follows_python() {
        assert_eq!(
            call(Builtin::Mul, json!([6, 7]), json!({})).unwrap(),
            json!(42)
        );
        assert_eq!(
            call(Builtin::Mul, json!([1.5, 2]), json!({})).unwrap(),
            json!(3.0)
        );
        assert_eq!(
            call(Builtin::Mul, json!(["ab", 3]), json!({})).unwrap(),
            json!("ababab")
        );
        assert_eq!(
            call(Builtin::Mul, json!([2, [1, 2]]), json!({})).unwrap(),
            json!([1, 2, 1, 2])
        );
        assert_eq!(
            call(Builtin::Mul, json!(["ab", -1]), json!({})).unwrap(),
            json!("")
        );
        assert!(call(Builtin::Mul, json!([i64::MAX, i64::MAX]), json!({}))
            .unwrap()
            .is_f64());
        assert_eq!(
            type_error(call(Builtin::Mul, json!(["a", "b"]), json!({}))),
            "can't multiply sequence by non-int of type 'str'"
        );
        assert_eq!(
            type_error(call(Builtin::Mul, json!(["a", 1.5]), json!({}))),
            "can't multiply sequence by non-int of type 'float'"
        );
        assert_eq!(
            type_error(call(Builtin::Mul, json!([{}, 2]), json!({}))),
            "unsupported operand type(s) for *: 'dict' and 'int'"
        );
        assert_eq!(
            type_error(call(Builtin::Mul, json!([2, null]), json!({}))),
            "unsupported operand type(s) for *: 'int' and 'NoneType'"
        );
        assert_eq!(
            type_error(call(Builtin::Mul, json!([null, {}]), json!({}))),
            "unsupported operand type(s) for *: 'NoneType' and 'dict'"
        );
        let err = call(Builtin::Mul, json!(["abc", 1i64 << 40]), json!({})).unwrap_err();
        assert_eq!(err.exc.exc_type, "MemoryError");
    }

    #[test]
    fn xsum_follows_python() {
        assert_eq!(
            call(Builtin::Xsum, json!([[1, 2, 3]]), json!({})).unwrap(),
            json!(6)
        );
        assert_eq!(
            call(Builtin::Xsum, json!([[1, 0.5]]), json!({})).unwrap(),
            json!(1.5)
        );
        assert_eq!(
            call(Builtin::Xsum, json!([[]]), json!({})).unwrap(),
            json!(0)
        );
        assert_eq!(
            call(Builtin::Xsum, json!([]), json!({"numbers": [4, 4]})).unwrap(),
            json!(8)
        );
        assert_eq!(
            type_error(call(Builtin::Xsum, json!([5]), json!({}))),
            "'int' object is not iterable"
        );
        assert_eq!(
            type_error(call(Builtin::Xsum, json!([[1, "a"]]), json!({}))),
            "unsupported operand type(s) for +: 'int' and 'str'"
        );
        assert_eq!(
            type_error(call(Builtin::Xsum, json!(["ab"]), json!({}))),
            "unsupported operand type(s) for +: 'int' and 'str'"
        );
        assert_eq!(
            type_error(call(Builtin::Xsum, json!([[1], [2]]), json!({}))),
            "xsum() takes 1 positional argument but 2 were given"
        );
    }

    #[test]
    fn noop_echo_fail() {
        assert_eq!(
            call(Builtin::Noop, json!([1, 2, 3]), json!({"a": 1})).unwrap(),
            Value::Null
        );
        assert_eq!(
            call(Builtin::Echo, json!([{"a": [1]}]), json!({})).unwrap(),
            json!({"a": [1]})
        );
        assert_eq!(
            call(Builtin::Echo, json!([]), json!({"value": "v"})).unwrap(),
            json!("v")
        );
        let err = call(Builtin::Fail, json!(["boom"]), json!({})).unwrap_err();
        assert_eq!(err.exc.exc_type, "ValueError");
        assert_eq!(err.exc.exc_module.as_deref(), Some("builtins"));
        assert_eq!(err.exc.exc_message, vec![json!("boom")]);
        assert!(
            err.traceback.ends_with("in fail\nValueError: boom\n"),
            "{}",
            err.traceback
        );
        let err = call(Builtin::Fail, json!([]), json!({"message": 3})).unwrap_err();
        assert_eq!(err.exc.exc_message, vec![json!(3)]);
        let err = call(Builtin::Fail, json!([[null, "a"]]), json!({})).unwrap_err();
        assert!(
            err.traceback.ends_with("ValueError: [None, 'a']\n"),
            "{}",
            err.traceback
        );
        assert_eq!(
            type_error(call(Builtin::Fail, json!([]), json!({}))),
            "fail() missing 1 required positional argument: 'message'"
        );
    }

    #[test]
    fn sleep_returns_seconds_and_honours_soft_limit() {
        assert_eq!(
            call(Builtin::Sleep, json!([0.01]), json!({})).unwrap(),
            json!(0.01)
        );
        assert_eq!(
            call(Builtin::Sleep, json!([0]), json!({})).unwrap(),
            json!(0)
        );
        let start = std::time::Instant::now();
        let err = call_limited(
            Builtin::Sleep,
            json!([5]),
            json!({}),
            Some(Duration::from_millis(50)),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(err.exc.exc_type, "SoftTimeLimitExceeded");
        assert_eq!(err.exc.exc_module.as_deref(), Some("billiard.exceptions"));
        assert_eq!(err.exc.exc_message, vec![json!("SoftTimeLimitExceeded()")]);
        assert!(err
            .traceback
            .ends_with("billiard.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()\n"));
        assert_eq!(
            type_error(call(Builtin::Sleep, json!(["x"]), json!({}))),
            "'str' object cannot be interpreted as an integer"
        );
        assert_eq!(
            call(Builtin::Sleep, json!([-1]), json!({}))
                .unwrap_err()
                .exc
                .exc_type,
            "ValueError"
        );
        assert_eq!(
            call(Builtin::Sleep, json!([1e300]), json!({}))
                .unwrap_err()
                .exc
                .exc_type,
            "OverflowError"
        );
    }
}
