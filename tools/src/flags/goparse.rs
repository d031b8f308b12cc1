//! Value syntaxes of Go's standard library, as etcd's flags accept them.
//!
//! etcd parses its flags with Go's `flag` package, which in turn uses
//! `strconv` (integers with base prefixes and `_` separators, booleans such as
//! `T` or `FALSE`) and `time.ParseDuration` (`1h5m0.5s`).  Users' scripts rely
//! on those spellings, so ferrocd accepts exactly the same ones.

/// Why a Go number parse failed (`strconv.ErrSyntax` / `strconv.ErrRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumError {
    Syntax,
    Range,
}

impl NumError {
    /// The text Go's `flag` package prints for this failure.
    pub fn flag_text(self) -> &'static str {
        match self {
            NumError::Syntax => "parse error",
            NumError::Range => "value out of range",
        }
    }

    /// The text `strconv` itself prints (`invalid syntax` / `value out of range`).
    pub fn strconv_text(self) -> &'static str {
        match self {
            NumError::Syntax => "invalid syntax",
            NumError::Range => "value out of range",
        }
    }
}

fn lower(c: u8) -> u8 {
    c | 0x20
}

/// Go's `underscoreOK`: underscores may only separate digits (base prefix counts as a digit).
fn underscore_ok(s: &str) -> bool {
    let mut b = s.as_bytes();
    if let Some(&c) = b.first() {
        if c == b'-' || c == b'+' {
            b = &b[1..];
        }
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(lower(b[1]), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = lower(b[1]) == b'x';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&lower(c))) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// `strconv.ParseUint(s, 0, bits)`.
pub fn parse_uint(s: &str, bits: u32) -> Result<u64, NumError> {
    parse_uint_base0(s, bits, s)
}

fn parse_uint_base0(s: &str, bits: u32, whole: &str) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Syntax);
    }
    let b = s.as_bytes();
    let (base, digits): (u64, &[u8]) = if b[0] == b'0' {
        if b.len() >= 3 && lower(b[1]) == b'b' {
            (2, &b[2..])
        } else if b.len() >= 3 && lower(b[1]) == b'o' {
            (8, &b[2..])
        } else if b.len() >= 3 && lower(b[1]) == b'x' {
            (16, &b[2..])
        } else {
            (8, &b[1..])
        }
    } else {
        (10, b)
    };
    let max_val: u64 = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let cutoff = u64::MAX / base + 1;
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => u64::from(c - b'0'),
            b'a'..=b'z' => u64::from(c - b'a') + 10,
            b'A'..=b'Z' => u64::from(c - b'A') + 10,
            _ => return Err(NumError::Syntax),
        };
        if d >= base {
            return Err(NumError::Syntax);
        }
        if n >= cutoff {
            return Err(NumError::Range);
        }
        n *= base;
        let n1 = n.wrapping_add(d);
        if n1 < n || n1 > max_val {
            return Err(NumError::Range);
        }
        n = n1;
    }
    if underscores && !underscore_ok(whole) {
        return Err(NumError::Syntax);
    }
    Ok(n)
}

/// `strconv.ParseInt(s, 0, bits)`.
pub fn parse_int(s: &str, bits: u32) -> Result<i64, NumError> {
    if s.is_empty() {
        return Err(NumError::Syntax);
    }
    let (neg, rest) = match s.as_bytes()[0] {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let un = parse_uint_base0(rest, bits, s)?;
    let cutoff: u64 = 1u64 << (bits - 1);
    if !neg && un >= cutoff {
        return Err(NumError::Range);
    }
    if neg && un > cutoff {
        return Err(NumError::Range);
    }
    if neg {
        // un <= cutoff, so this cannot overflow (cutoff negates to i64::MIN at most)
        Ok((un as i128).wrapping_neg() as i64)
    } else {
        Ok(un as i64)
    }
}

/// `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

fn unit_nanos(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => NS,
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => SEC,
        "m" => MIN,
        "h" => HOUR,
        _ => return None,
    })
}

/// `time.ParseDuration`: returns nanoseconds; `None` on any syntax/overflow error.
pub fn parse_duration(orig: &str) -> Option<i64> {
    let mut s = orig.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return None;
        }
        // leading integer
        let mut v: u64 = 0;
        let mut i = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            if v > (LIMIT - 1) / 10 {
                return None;
            }
            v = v * 10 + u64::from(s[i] - b'0');
            if v > LIMIT {
                return None;
            }
            i += 1;
        }
        let pre = i > 0;
        s = &s[i..];
        // optional fraction
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let mut j = 0;
            let mut overflow = false;
            while j < s.len() && s[j].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(s[j] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                j += 1;
            }
            post = j > 0;
            s = &s[j..];
        }
        if !pre && !post {
            return None;
        }
        // unit: everything up to the next digit or '.'
        let mut k = 0;
        while k < s.len() && !(s[k] == b'.' || s[k].is_ascii_digit()) {
            k += 1;
        }
        if k == 0 {
            return None;
        }
        let unit_str = std::str::from_utf8(&s[..k]).ok()?;
        let unit = unit_nanos(unit_str)?;
        s = &s[k..];
        if v > (LIMIT - 1) / unit {
            return None;
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT - 1 {
                return None;
            }
        }
        total += v;
        if total > LIMIT - 1 {
            return None;
        }
    }
    let t = total as i64;
    Some(if neg { -t } else { t })
}

/// Go's `time.Duration.String()` (e.g. `100ms`, `1s`, `5m0s`, `2h0m0s`, `737.52µs`).
pub fn duration_string(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < SEC {
        let (prec, unit) = if u < US {
            (0, "ns")
        } else if u < MS {
            (3, "\u{b5}s")
        } else {
            (6, "ms")
        };
        let (int, frac) = split_frac(u, prec);
        out.push_str(&int.to_string());
        out.push_str(&frac);
        out.push_str(unit);
    } else {
        let (secs, frac) = split_frac(u, 9);
        let s = secs % 60;
        let mins = secs / 60;
        if mins > 0 {
            let m = mins % 60;
            let h = mins / 60;
            if h > 0 {
                out.push_str(&format!("{h}h"));
            }
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{s}{frac}s"));
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// Splits `v` into `v / 10^prec` and a ".ddd" fraction without trailing zeros.
fn split_frac(v: u64, prec: u32) -> (u64, String) {
    if prec == 0 {
        return (v, String::new());
    }
    let p = 10u64.pow(prec);
    let frac = v % p;
    if frac == 0 {
        return (v / p, String::new());
    }
    let digits = format!("{:0width$}", frac, width = prec as usize);
    (v / p, format!(".{}", digits.trim_end_matches('0')))
}

/// Go's `%q` (strconv.Quote) for a string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` for a `[]string`: `["a" "b"]`.
pub fn quote_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_like_go() {
        assert_eq!(parse_uint("100000", 64), Ok(100000));
        assert_eq!(parse_uint("0x10", 64), Ok(16));
        assert_eq!(parse_uint("0X10", 64), Ok(16));
        assert_eq!(parse_uint("010", 64), Ok(8));
        assert_eq!(parse_uint("0o10", 64), Ok(8));
        assert_eq!(parse_uint("0b101", 64), Ok(5));
        assert_eq!(parse_uint("1_000", 64), Ok(1000));
        assert_eq!(parse_uint("0", 64), Ok(0));
        assert_eq!(parse_uint("0x", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("0x_1", 64), Ok(1));
        assert_eq!(parse_uint("1__0", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("_1", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("1_", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("-1", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("+1", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("abc", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("08", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("18446744073709551615", 64), Ok(u64::MAX));
        assert_eq!(parse_uint("18446744073709551616", 64), Err(NumError::Range));
        assert_eq!(parse_uint("4294967295", 32), Ok(4294967295));
        assert_eq!(parse_uint("4294967296", 32), Err(NumError::Range));
    }

    #[test]
    fn int_like_go() {
        assert_eq!(parse_int("-5", 64), Ok(-5));
        assert_eq!(parse_int("+5", 64), Ok(5));
        assert_eq!(parse_int("0x7fffffffffffffff", 64), Ok(i64::MAX));
        assert_eq!(parse_int("-0x8000000000000000", 64), Ok(i64::MIN));
        assert_eq!(parse_int("0x8000000000000000", 64), Err(NumError::Range));
        assert_eq!(parse_int("-", 64), Err(NumError::Syntax));
        assert_eq!(parse_int("-1_0", 64), Ok(-10));
    }

    #[test]
    fn bool_like_go() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        for bad in ["yes", "no", "tRUE", "", "on"] {
            assert_eq!(parse_bool(bad), None);
        }
    }

    #[test]
    fn duration_like_go() {
        assert_eq!(parse_duration("5s"), Some(5 * SEC as i64));
        assert_eq!(parse_duration("2h"), Some(2 * HOUR as i64));
        assert_eq!(parse_duration("100ms"), Some(100 * MS as i64));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("-0"), Some(0));
        assert_eq!(parse_duration("-1.5s"), Some(-1_500_000_000));
        assert_eq!(
            parse_duration("1h5m.5s"),
            Some((HOUR + 5 * MIN + SEC / 2) as i64)
        );
        assert_eq!(parse_duration("1\u{b5}s"), Some(1000));
        assert_eq!(parse_duration("1\u{3bc}s"), Some(1000));
        assert_eq!(parse_duration("1us"), Some(1000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("."), None);
        assert_eq!(parse_duration(".s"), None);
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("3000000h"), None);
        assert_eq!(parse_duration("2562047h"), Some(2562047 * HOUR as i64));
    }

    #[test]
    fn duration_strings_like_go() {
        assert_eq!(duration_string(0), "0s");
        assert_eq!(duration_string(100 * MS as i64), "100ms");
        assert_eq!(duration_string(SEC as i64), "1s");
        assert_eq!(duration_string(5 * MIN as i64), "5m0s");
        assert_eq!(duration_string(2 * HOUR as i64), "2h0m0s");
        assert_eq!(duration_string(737_520), "737.52\u{b5}s");
        assert_eq!(duration_string(1_500_000_000), "1.5s");
        assert_eq!(duration_string(-1_500), "-1.5\u{b5}s");
        assert_eq!(duration_string(42), "42ns");
        assert_eq!(duration_string((HOUR + 1) as i64), "1h0m0.000000001s");
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("a\nb\x01"), "\"a\\nb\\x01\"");
        assert_eq!(quote("é"), "\"é\"");
        assert_eq!(
            quote_list(&["a".to_string(), "b".to_string()]),
            "[\"a\" \"b\"]"
        );
    }
}
