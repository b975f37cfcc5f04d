//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`), read exactly: with integer
//! arithmetic, rounded up as upstream's `Value()` and `MilliValue()` do, saturating instead of
//! overflowing.

/// A quantity in thousandths of its unit (`500m` is 500, `2` is 2000), rounded up.
pub fn milli(s: &str) -> Option<i64> {
    scaled(s, 1000)
}

/// A quantity in whole units (`1Ki` is 1024, `1500m` is 2), rounded up.
pub fn value(s: &str) -> Option<i64> {
    scaled(s, 1)
}

fn scaled(s: &str, by: i128) -> Option<i64> {
    let s = s.trim();
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    // Digits past 30 cannot change a rounded-up i64 result, apart from making it round up.
    let digits: String = whole.chars().chain(fraction.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let decimals = fraction.len() as i32;
    let (mantissa, dropped) = if digits.len() > 30 {
        let kept = &digits[..30];
        (kept.parse::<i128>().ok()?, (digits.len() - 30) as i32)
    } else {
        (if digits.is_empty() { 0 } else { digits.parse::<i128>().ok()? }, 0)
    };
    // value = mantissa * 10^(dropped - decimals) * base^exponent
    let (base, exponent): (i128, i32) = match suffix {
        "" => (10, 0),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        exp if exp.starts_with(['e', 'E']) => (10, exp[1..].parse::<i32>().ok().filter(|e| e.abs() <= 40)?),
        _ => return None,
    };
    let mut numerator = mantissa.checked_mul(by)?;
    let mut denominator: i128 = 1;
    let mut ten = dropped - decimals;
    if base == 10 {
        ten += exponent;
    } else {
        numerator = numerator.checked_mul(1i128 << exponent).unwrap_or(i128::MAX);
    }
    if ten >= 0 {
        for _ in 0..ten {
            numerator = numerator.saturating_mul(10);
        }
    } else {
        for _ in 0..-ten {
            denominator = denominator.saturating_mul(10);
        }
    }
    let rounded = numerator / denominator + i128::from(numerator % denominator != 0);
    let clamped = i64::try_from(rounded).unwrap_or(i64::MAX);
    Some(if negative { -clamped } else { clamped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_suffix() {
        let cases = [
            ("500m", Some(500), Some(1)),
            ("2", Some(2000), Some(2)),
            ("1.5", Some(1500), Some(2)),
            ("0.1", Some(100), Some(1)),
            ("100n", Some(1), Some(1)),
            ("1Ki", Some(1_024_000), Some(1024)),
            ("128Mi", Some(134_217_728_000), Some(134_217_728)),
            ("1.5Gi", Some(1_610_612_736_000), Some(1_610_612_736)),
            ("1k", Some(1_000_000), Some(1000)),
            ("2e3", Some(2_000_000), Some(2000)),
            ("1E-3", Some(1), Some(1)),
            ("-250m", Some(-250), Some(-1)),
            ("0", Some(0), Some(0)),
            ("1Ei", Some(i64::MAX), Some(1 << 60)),
            ("99999999999999999999999999999999999", Some(i64::MAX), Some(i64::MAX)),
            ("", None, None),
            ("abc", None, None),
            ("1.2.3", None, None),
            ("5 Mi", None, None),
            ("1e999", None, None),
            (".", None, None),
        ];
        for (input, expect_milli, expect_value) in cases {
            assert_eq!((milli(input), value(input)), (expect_milli, expect_value), "{input}");
        }
    }
}
