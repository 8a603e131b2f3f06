//! JSON text as Python's `json.dumps` writes it by default: `", "` and `": "`
//! separators and `ensure_ascii` escapes, so stored results match Celery's bytes.

use serde_json::{Number, Value};
use std::fmt::Write;

/// `json.dumps(value)` with Python's defaults. Object key order is kept as
/// stored (serde_json's `preserve_order`), which is what makes byte-for-byte
/// equality with Celery's output possible.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, &JSON);
    out
}

/// Appends `json.dumps(value)` to `out`.
pub fn write_json(out: &mut String, value: &Value) {
    write_value(out, value, &JSON);
}

/// Appends `json.dumps(s)` to `out`.
pub fn write_json_str(out: &mut String, s: &str) {
    write_str(out, s);
}

/// What `json.dumps` and the builtin `repr` (`pyrepr`) write differently for
/// a JSON value: the three literals and string quoting. The layout of lists
/// and dicts (`[a, b]`, `{k: v}`) and numbers are the same in both.
pub(crate) struct Dialect {
    pub null: &'static str,
    pub true_: &'static str,
    pub false_: &'static str,
    /// Writes a string, quoted; also used for dict keys.
    pub string: fn(&mut String, &str),
}

const JSON: Dialect = Dialect {
    null: "null",
    true_: "true",
    false_: "false",
    string: write_str,
};

/// Writes `value` with Python's default separators (`", "`, `": "`).
pub(crate) fn write_value(out: &mut String, value: &Value, dialect: &Dialect) {
    match value {
        Value::Null => out.push_str(dialect.null),
        Value::Bool(true) => out.push_str(dialect.true_),
        Value::Bool(false) => out.push_str(dialect.false_),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => (dialect.string)(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item, dialect);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                (dialect.string)(out, k);
                out.push_str(": ");
                write_value(out, v, dialect);
            }
            out.push('}');
        }
    }
}

/// A JSON number as both `json.dumps` and `repr` write it. serde_json has no
/// non-finite numbers, so floats are always `float.__repr__`.
fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    } else {
        out.push_str(&n.to_string());
    }
}

/// Appends `float_repr(f)` to `out`.
pub fn write_float(out: &mut String, f: f64) {
    // Timestamps and runtimes are in fixed notation, where ryu's shortest
    // digits are laid out exactly as Python's: no formatting round trip
    // through `{:e}` (a hot spot with task events on).
    if f == 0.0 || (1e-4..1e16).contains(&f.abs()) {
        out.push_str(ryu::Buffer::new().format_finite(f));
    } else {
        out.push_str(&float_repr(f));
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for
/// decimal exponents in -4..16, otherwise `1e+16` / `1.5e-07` style.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // ryu picks Python's digits (the shortest that round-trip, the closest
    // when several do; Rust's `{:e}` can differ in the last one); only the
    // layout is Python's own.
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(f);
    let (neg, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mantissa, shift) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int_part}{frac_part}");
    // The decimal exponent of the first significant digit.
    let mut exp = shift + int_part.len() as i32 - 1;
    let lead = all.bytes().take_while(|b| *b == b'0').count();
    let digits = if lead == all.len() {
        exp = 0;
        "0".to_string()
    } else {
        exp -= lead as i32;
        all[lead..].trim_end_matches('0').to_string()
    };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..(-point) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// A JSON string literal with `ensure_ascii=True` escaping.
fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs of printable ASCII are copied whole: a base64 body or a long
    // result is mostly that, and char by char it was a hot spot.
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&s[run..i]);
        let c = s[i..].chars().next().unwrap_or('\u{fffd}');
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
        i += c.len_utf8();
        run = i;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_escape_as_python_does_around_plain_runs() {
        let s = "plain \"q\" back\\slash\nline\ttab \u{e9}t\u{e9} \u{1f600}!";
        assert_eq!(
            to_string(&json!(s)),
            r#""plain \"q\" back\\slash\nline\ttab \u00e9t\u00e9 \ud83d\ude00!""#
        );
        assert_eq!(to_string(&json!("")), "\"\"");
        assert_eq!(to_string(&json!("\u{1}")), r#""\u0001""#);
    }

    #[test]
    fn separators_and_order() {
        let v: Value =
            serde_json::from_str(r#"{"b": 1, "a": [1, 2, {"c": null}], "d": true}"#).unwrap();
        assert_eq!(
            to_string(&v),
            r#"{"b": 1, "a": [1, 2, {"c": null}], "d": true}"#
        );
        assert_eq!(to_string(&json!([])), "[]");
        assert_eq!(to_string(&json!({})), "{}");
    }

    #[test]
    fn ensure_ascii_escapes() {
        let v =
            json!("h\u{e9}llo \u{2603} \u{2028} \"q\" \\ \n\r\t\u{8}\u{c}\u{1}\u{7f} \u{1F600}");
        assert_eq!(
            to_string(&v),
            r#""h\u00e9llo \u2603 \u2028 \"q\" \\ \n\r\t\b\f\u0001\u007f \ud83d\ude00""#
        );
    }

    #[test]
    fn floats_like_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (0.0029228519999833225, "0.0029228519999833225"),
            (1795476848.680869, "1795476848.680869"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123456789012345.0, "123456789012345.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (2.0f64.powi(70), "1.1805916207174113e+21"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f}");
            let mut fast = String::new();
            write_float(&mut fast, f);
            assert_eq!(fast, want, "{f}");
        }
        // serde_json has no NaN or infinity: `json!` makes them null.
        assert_eq!(to_string(&json!([f64::NAN, f64::INFINITY])), "[null, null]");
        assert_eq!(to_string(&json!([1.0, 2, -3])), "[1.0, 2, -3]");
    }

    #[test]
    fn the_fixed_notation_shortcut_agrees_with_the_general_path() {
        // Around every power of ten of the shortcut's range, and its edges.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for exp in -6..18 {
            for _ in 0..500 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let m = 1.0 + (x % 1_000_000_007) as f64 / 1_000_000_007.0;
                for f in [m * 10f64.powi(exp), -m * 10f64.powi(exp)] {
                    let mut fast = String::new();
                    write_float(&mut fast, f);
                    assert_eq!(fast, float_repr(f), "{f:e}");
                }
            }
        }
    }

    #[test]
    fn floats_like_python_at_every_magnitude() {
        // Made by CPython: random bit patterns, every decade, timestamps.
        let text = include_str!("../../tests/fixtures/float_repr.txt");
        let mut n = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (bits, want) = line.split_once(' ').unwrap();
            let f = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
            assert_eq!(float_repr(f), want, "{bits}");
            let mut fast = String::new();
            write_float(&mut fast, f);
            assert_eq!(fast, want, "{bits}");
            n += 1;
        }
        assert!(n > 3000);
    }

    #[test]
    fn reproduces_fixture_envelopes() {
        // Every captured envelope, re-serialised from its parsed form, must give
        // the same bytes: this checks spacing, escaping and key order together.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/celery-5.7");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let fixture: Value = serde_json::from_str(&text).unwrap();
            let raw = fixture["raw"].as_str().unwrap();
            let parsed: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(to_string(&parsed), raw, "{}", path.display());
            n += 1;
        }
        assert!(n >= 30);
    }
}
