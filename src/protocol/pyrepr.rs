//! Python `repr()` of JSON values, for Celery's log lines (`succeeded in
//! 0.01s: 'abc'`) and for synthesising `argsrepr`/`kwargsrepr`.
//!
//! Celery never uses the builtin `repr` for those: it uses
//! `celery.utils.saferepr.saferepr`, which always single-quotes strings and
//! escapes only `'` (so `'a\nb'` keeps a raw newline and U+2028 stays as is,
//! as `task-v2-unicode.json` shows), shows at most three nesting levels and
//! truncates after `maxlen` characters. `repr`, `args_repr` and `kwargs_repr`
//! follow saferepr; `python_repr` is the builtin `repr`, which is what
//! exception reprs such as `ValueError('boom')` are made of.

use super::pyjson::{self, Dialect};
use serde_json::{Map, Value};
use std::fmt::Write;

/// Celery's `argsrepr_maxsize` / `kwargsrepr_maxsize` default.
pub const ARGSREPR_MAXSIZE: usize = 1024;
/// saferepr's default `maxlevels`.
const MAX_LEVELS: usize = 3;

/// `saferepr(value)` without a length limit.
pub fn repr(value: &Value) -> String {
    saferepr(value, None)
}

/// `(2, 3)` / `(1,)` / `()`: the repr of args as a tuple.
pub fn args_repr(args: &[Value]) -> String {
    let mut tokens = Vec::new();
    push_seq(
        &mut tokens,
        args.iter(),
        "(",
        if args.len() == 1 { ",)" } else { ")" },
        0,
    );
    render(&tokens, Some(ARGSREPR_MAXSIZE))
}

/// `{'y': 10}`, as Celery writes `kwargsrepr`.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut tokens = Vec::new();
    push_dict(&mut tokens, kwargs, 0);
    render(&tokens, Some(ARGSREPR_MAXSIZE))
}

/// `celery.utils.saferepr.saferepr(value, maxlen)`; `maxlen` counts characters.
pub fn saferepr(value: &Value, maxlen: Option<usize>) -> String {
    let mut tokens = Vec::new();
    push_value(&mut tokens, value, 0);
    render(&tokens, maxlen)
}

/// The builtin `repr()` of a JSON value: Python's string quoting rules and
/// escapes, `None`/`True`/`False`, `[1, 2]`, `{'a': 1}`.
pub fn python_repr(value: &Value) -> String {
    let mut out = String::new();
    pyjson::write_value(&mut out, value, &PYTHON);
    out
}

const PYTHON: Dialect = Dialect {
    null: "None",
    true_: "True",
    false_: "False",
    string: |out, s| out.push_str(&python_str_repr(s)),
};

/// Builtin `repr()` of a `str`.
pub fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c => {
                let cp = c as u32;
                let _ = if cp < 0x100 {
                    write!(out, "\\x{cp:02x}")
                } else if cp < 0x10000 {
                    write!(out, "\\u{cp:04x}")
                } else {
                    write!(out, "\\U{cp:08x}")
                };
            }
        }
    }
    out.push(quote);
    out
}

/// Approximates `str.isprintable()` without a Unicode database: the control,
/// format, separator, private-use and noncharacter code points Python escapes.
fn is_printable(c: char) -> bool {
    let cp = c as u32;
    if cp < 0x20 || (0x7f..=0xa0).contains(&cp) {
        return false;
    }
    !matches!(cp,
        0xad
        | 0x600..=0x605
        | 0x61c
        | 0x6dd
        | 0x70f
        | 0x890..=0x891
        | 0x8e2
        | 0x1680
        | 0x180e
        | 0x2000..=0x200f
        | 0x2028..=0x202f
        | 0x205f..=0x2064
        | 0x2066..=0x206f
        | 0x3000
        | 0xd800..=0xf8ff
        | 0xfdd0..=0xfdef
        | 0xfeff
        | 0xfff9..=0xfffb
        | 0xfffe..=0xffff
        | 0x110bd
        | 0x110cd
        | 0x13430..=0x1343f
        | 0x1bca0..=0x1bca3
        | 0x1d173..=0x1d17a
        | 0xe0001
        | 0xe0020..=0xe007f
        | 0xf0000..=0x10ffff)
        && (cp & 0xfffe) != 0xfffe
}

/// saferepr's token stream, flattened. `Open`/`Close` are its non-truncatable
/// literals; `Sep` (`, ` and `: `) is truncatable.
#[derive(Debug)]
enum Token {
    Open(&'static str),
    Close(&'static str),
    Sep(&'static str),
    Quoted(String),
    Other(String),
}

fn push_value(tokens: &mut Vec<Token>, value: &Value, level: usize) {
    match value {
        Value::Array(items) => push_seq(tokens, items.iter(), "[", "]", level),
        Value::Object(map) => push_dict(tokens, map, level),
        Value::String(s) => tokens.push(Token::Quoted(s.clone())),
        // `repr` and `str` of None, booleans and numbers are the same.
        other => tokens.push(Token::Other(python_repr(other))),
    }
}

fn push_seq<'a>(
    tokens: &mut Vec<Token>,
    items: impl ExactSizeIterator<Item = &'a Value>,
    open: &'static str,
    close: &'static str,
    level: usize,
) {
    if level >= MAX_LEVELS {
        tokens.push(Token::Other(format!("{open}...{close}")));
        return;
    }
    tokens.push(Token::Open(open));
    let len = items.len();
    for (i, item) in items.enumerate() {
        push_value(tokens, item, level + 1);
        if i + 1 < len {
            tokens.push(Token::Sep(", "));
        }
    }
    tokens.push(Token::Close(close));
}

fn push_dict(tokens: &mut Vec<Token>, map: &Map<String, Value>, level: usize) {
    if level >= MAX_LEVELS {
        tokens.push(Token::Other("{...}".into()));
        return;
    }
    tokens.push(Token::Open("{"));
    let len = map.len();
    for (i, (k, v)) in map.iter().enumerate() {
        tokens.push(Token::Quoted(k.clone()));
        tokens.push(Token::Sep(": "));
        push_value(tokens, v, level + 1);
        if i + 1 < len {
            tokens.push(Token::Sep(", "));
        }
    }
    tokens.push(Token::Close("}"));
}

/// `celery.utils.text.truncate`: cut at `maxlen` chars, back to the last
/// space, and add `...`.
fn truncate(s: &str, maxlen: Option<usize>) -> String {
    match maxlen {
        Some(max) if max > 0 && s.chars().count() >= max => {
            let head: String = s.chars().take(max).collect();
            let head = match head.rsplit_once(' ') {
                Some((before, _)) => before.to_string(),
                None => head,
            };
            head + "..."
        }
        _ => s.to_string(),
    }
}

/// saferepr's `_saferepr` loop: emit tokens until the budget is spent, then
/// `, ...` and the closers of whatever containers are still open. Like
/// Celery, the token that hit the limit is dropped, even if it was a closer.
fn render(tokens: &[Token], maxlen: Option<usize>) -> String {
    let mut out = String::new();
    let mut budget = maxlen.map(|m| m as i64);
    let mut open: Vec<&'static str> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if matches!(budget, Some(b) if b <= 0) {
            out.push_str(", ...");
            // Celery drops this token but still tracks containers it opens
            // or closes: their closers come from the pending iterators.
            match token {
                Token::Open(_) => {
                    if let Some(Token::Close(c)) = find_close(tokens, i) {
                        open.push(c);
                    }
                }
                Token::Close(_) => {
                    open.pop();
                }
                _ => {}
            }
            while let Some(c) = open.pop() {
                out.push_str(c);
            }
            return out;
        }
        let remaining = budget.map(|b| b as usize);
        let val = match token {
            Token::Open(s) => {
                if let Some(Token::Close(c)) = find_close(tokens, i) {
                    open.push(c);
                }
                s.to_string()
            }
            Token::Close(s) => {
                open.pop();
                s.to_string()
            }
            Token::Sep(s) => s.to_string(),
            Token::Quoted(s) => format!("'{}'", truncate(s, remaining).replace('\'', "\\'")),
            Token::Other(s) => truncate(s, remaining),
        };
        if let Some(b) = budget.as_mut() {
            *b -= val.chars().count() as i64;
        }
        out.push_str(&val);
    }
    out
}

/// The `Close` token matching the `Open` token at `start`.
fn find_close(tokens: &[Token], start: usize) -> Option<&Token> {
    let mut depth = 0usize;
    for token in &tokens[start..] {
        match token {
            Token::Open(_) => depth += 1,
            Token::Close(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(token);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> String {
        args_repr(v.as_array().unwrap())
    }

    #[test]
    fn args_tuples() {
        assert_eq!(args(json!([2, 3])), "(2, 3)");
        assert_eq!(args(json!([1])), "(1,)");
        assert_eq!(args(json!([])), "()");
        assert_eq!(args(json!([[0, 2, 4]])), "([0, 2, 4],)");
        assert_eq!(
            args(json!([null, true, false, 1.0, "x"])),
            "(None, True, False, 1.0, 'x')"
        );
    }

    #[test]
    fn kwargs_dicts() {
        assert_eq!(kwargs_repr(json!({}).as_object().unwrap()), "{}");
        assert_eq!(
            kwargs_repr(json!({"y": 10}).as_object().unwrap()),
            "{'y': 10}"
        );
        assert_eq!(
            kwargs_repr(
                json!({"a": [1, {"b": "c"}], "it's": 2})
                    .as_object()
                    .unwrap()
            ),
            "{'a': [1, {'b': 'c'}], 'it\\'s': 2}"
        );
    }

    #[test]
    fn celery_string_quoting() {
        // From task-v2-unicode.json: U+2028 and double quotes stay raw.
        assert_eq!(
            args(json!(["h\u{e9}llo \u{2603} \u{2028} \"q\""])),
            "('h\u{e9}llo \u{2603} \u{2028} \"q\"',)"
        );
        assert_eq!(repr(&json!("it's")), "'it\\'s'");
        assert_eq!(repr(&json!("a\nb")), "'a\nb'");
        assert_eq!(repr(&json!(42)), "42");
        assert_eq!(repr(&json!({"a": 1})), "{'a': 1}");
    }

    #[test]
    fn nesting_is_limited_to_three_levels() {
        assert_eq!(repr(&json!([[[[1]]]])), "[[[[...]]]]");
        assert_eq!(args(json!([[[1]]])), "([[1]],)");
        assert_eq!(args(json!([[[[1]]]])), "([[[...]]],)");
        assert_eq!(repr(&json!([[[{"a": 1}]]])), "[[[{...}]]]");
    }

    #[test]
    fn truncation_like_saferepr() {
        let long: Vec<Value> = (0..400).map(|i| json!(i)).collect();
        let out = args_repr(&long);
        assert!(out.starts_with("(0, 1, 2, "));
        assert!(out.ends_with(", ...)"), "{out}");
        assert!(out.chars().count() < 1040);
        let s = "word ".repeat(300);
        let out = args_repr(&[json!(s)]);
        assert!(out.starts_with("('word word"));
        // The closer that hit the limit is dropped, as in Celery.
        assert!(out.ends_with("...', ..."), "{out}");
        // Celery quirk: the separator is written before the ellipsis.
        assert_eq!(saferepr(&json!([1, 2, 3]), Some(4)), "[1, , ...]");
    }

    #[test]
    fn builtin_repr() {
        assert_eq!(python_repr(&json!("abc")), "'abc'");
        assert_eq!(python_repr(&json!("it's")), "\"it's\"");
        assert_eq!(python_repr(&json!("it's \"q\"")), "'it\\'s \"q\"'");
        assert_eq!(
            python_repr(&json!("a\\b\n\t\r\u{1}\u{7f}")),
            "'a\\\\b\\n\\t\\r\\x01\\x7f'"
        );
        assert_eq!(
            python_repr(&json!("h\u{e9}llo \u{2603} \u{2028}")),
            "'h\u{e9}llo \u{2603} \\u2028'"
        );
        assert_eq!(
            python_repr(&json!([null, true, 1.5, {"k": "v"}])),
            "[None, True, 1.5, {'k': 'v'}]"
        );
    }
}
