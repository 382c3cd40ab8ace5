//! Decimal numbers to and from text without Rust's float formatting and parsing.
//!
//! `core`'s `f64` `Display` and `FromStr` are correct for every double, and weigh
//! ~30 KB in a wasm module (Grisu/Dragon4 with their tables, and Eisel-Lemire with its
//! 11 KB table of powers of five): ~15 KB gzip of the playground's first load, for
//! numbers like `7.5` and `0.25`. These two cover what the catalog's parameters and
//! the API's messages use, exactly:
//! - [`parse`]: a decimal of up to 19 significant digits with an exponent within
//!   ±22 is exact (Clinger's fast path: both operands are exact doubles, so the one
//!   multiplication or division is correctly rounded); anything longer is within an
//!   ulp or two, far below any parameter's meaning.
//! - [`text`]: whole numbers below 2^53 and up to 6 decimals exactly, as `Display`
//!   writes them (`7`, `0.25`, `-3.5`); finer values rounded to 6 decimals.

/// 10^0 ..= 10^22: every one an exact double.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A decimal number as `str::parse::<f64>` reads one (`7`, `-7.5`, `+.5`, `7.`,
/// `1e3`, `2.5E-2`), without `inf` or `nan`; `None` for anything else. The caller
/// trims.
pub fn parse(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let (negative, mut rest) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut mantissa: u64 = 0;
    let mut exp10: i64 = 0;
    let mut digits = 0usize;
    let mut exact = true;
    let mut take = |d: u8, fraction: bool, mantissa: &mut u64, exp10: &mut i64| {
        digits += 1;
        if *mantissa < 1_000_000_000_000_000_000 {
            *mantissa = *mantissa * 10 + u64::from(d - b'0');
            if fraction {
                *exp10 -= 1;
            }
        } else {
            // Past 19 digits: an integer digit scales, a fraction digit is dropped.
            exact = false;
            if !fraction {
                *exp10 += 1;
            }
        }
    };
    while let [d @ b'0'..=b'9', tail @ ..] = rest {
        take(*d, false, &mut mantissa, &mut exp10);
        rest = tail;
    }
    if let [b'.', tail @ ..] = rest {
        rest = tail;
        while let [d @ b'0'..=b'9', tail @ ..] = rest {
            take(*d, true, &mut mantissa, &mut exp10);
            rest = tail;
        }
    }
    if digits == 0 {
        return None;
    }
    if let [b'e' | b'E', tail @ ..] = rest {
        let (sign, mut tail) = match tail {
            [b'-', t @ ..] => (-1, t),
            [b'+', t @ ..] => (1, t),
            t => (1, t),
        };
        let mut e: i64 = 0;
        let mut any = false;
        while let [d @ b'0'..=b'9', t @ ..] = tail {
            e = (e * 10 + i64::from(d - b'0')).min(100_000);
            any = true;
            tail = t;
        }
        if !any {
            return None;
        }
        exp10 += sign * e;
        rest = tail;
    }
    if !rest.is_empty() {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let m = mantissa as f64;
    let value = if mantissa == 0 {
        0.0
    } else if exact && mantissa < (1 << 53) && (-22..=22).contains(&exp10) {
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        let p = POW10[exp10.unsigned_abs() as usize];
        if exp10 < 0 { m / p } else { m * p }
    } else {
        #[allow(clippy::cast_possible_truncation)]
        let e = exp10.clamp(-400, 400) as i32;
        // Two steps keep 10^e within range where one would overflow to 0 or inf.
        m * 10f64.powi(e / 2) * 10f64.powi(e - e / 2)
    };
    Some(if negative { -value } else { value })
}

/// `x` as `Display` writes it, for whole numbers below 2^53 and values with up to 6
/// decimals; finer values are rounded to 6 decimals, larger ones to a whole number.
pub fn text(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let scaled = (x.abs() * 1e6).round();
    if scaled >= 9.0e15 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = x.abs().round() as u128;
        return format!("{sign}{whole}");
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = scaled as u64;
    if n == 0 {
        return "0".into();
    }
    let (whole, fraction) = (n / 1_000_000, n % 1_000_000);
    if fraction == 0 {
        format!("{sign}{whole}")
    } else {
        let digits = format!("{fraction:06}");
        format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_agrees_with_the_standard_library_on_what_it_accepts() {
        for s in [
            "0",
            "7",
            "-7",
            "+7",
            "7.",
            ".5",
            "-.5",
            "7.5",
            "0.1",
            "0.25",
            "3.14159",
            "1e3",
            "2.5E-2",
            "1e22",
            "1e-22",
            "123456789012345678",
            "9007199254740993",
            "0.3",
            "100",
            "1.000000000000000000001",
            "12345678901234567890123",
            "1e300",
            "4.9e-324",
            "1e-400",
            "1e400",
            "00012.5000",
            "-0",
        ] {
            let ours = parse(s).unwrap_or_else(|| panic!("{s} was refused"));
            let std = s.parse::<f64>().unwrap();
            if std.is_finite() && std != 0.0 {
                assert!(((ours - std) / std).abs() < 1e-14, "{s}: {ours} vs {std}");
            } else {
                assert_eq!(ours.to_bits(), std.to_bits(), "{s}");
            }
        }
    }

    #[test]
    fn short_decimals_parse_exactly() {
        for s in [
            "7.5",
            "0.1",
            "0.25",
            "3.5",
            "-2.75",
            "1e-3",
            "12.345678",
            "28",
            "0.000001",
        ] {
            assert_eq!(parse(s), s.parse::<f64>().ok(), "{s}");
        }
    }

    #[test]
    fn parse_refuses_what_is_not_a_decimal() {
        for s in [
            "", "-", "+", ".", "e3", "1e", "1e+", "1.2.3", "1,5", "0x10", "inf", "nan", "7 ", " 7",
            "1_000", "--1", "7a",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn text_writes_what_display_writes() {
        for x in [
            0.0,
            7.0,
            -7.0,
            7.5,
            0.25,
            0.1,
            3.5,
            1.0,
            100.0,
            28.0,
            0.000_001,
            12.345_678,
            -0.5,
            4_294_967_295.0,
            1e15,
        ] {
            assert_eq!(text(x), x.to_string(), "{x}");
        }
        assert_eq!(text(-0.0), "0");
        assert_eq!(text(0.123_456_789), "0.123457");
        assert_eq!(text(f64::NAN), "NaN");
        assert_eq!(text(f64::NEG_INFINITY), "-inf");
    }
}
