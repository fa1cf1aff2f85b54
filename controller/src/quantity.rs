//! Kubernetes resource quantities (`500m`, `64Mi`, `1G`, `1e3`) as integers the scheduler can add.

/// Parses a quantity into milli-units (`"1"` → 1000, `"250m"` → 250, `"1Ki"` → 1_024_000).
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (mantissa, exp10): (&str, i32) = match suffix {
        "" => (num, 0),
        "m" => (num, -3),
        "k" => (num, 3),
        "M" => (num, 6),
        "G" => (num, 9),
        "T" => (num, 12),
        "P" => (num, 15),
        "E" => (num, 18),
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let pow = match suffix {
                "Ki" => 10,
                "Mi" => 20,
                "Gi" => 30,
                "Ti" => 40,
                "Pi" => 50,
                _ => 60,
            };
            return binary(num, pow);
        }
        e if e.starts_with('e') || e.starts_with('E') => (num, e[1..].parse().ok()?),
        _ => return None,
    };
    scaled(mantissa, exp10)
}

fn binary(num: &str, pow: u32) -> Option<i128> {
    let milli = scaled(num, 0)?;
    milli.checked_mul(1i128 << pow)
}

/// `num × 10^exp10` in milli-units, rounded up as Kubernetes rounds.
fn scaled(num: &str, exp10: i32) -> Option<i128> {
    let neg = num.starts_with('-');
    let num = num.trim_start_matches(['+', '-']);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let mut v: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut e = exp10 + 3 - frac.len() as i32;
    while e > 0 {
        v = v.checked_mul(10)?;
        e -= 1;
    }
    let mut round_up = false;
    while e < 0 {
        if v % 10 != 0 {
            round_up = true;
        }
        v /= 10;
        e += 1;
    }
    if round_up {
        v += 1;
    }
    Some(if neg { -v } else { v })
}

/// Parses a quantity into whole units, rounding up (`"1Ki"` → 1024, `"0.5"` → 1).
pub fn parse_units(s: &str) -> Option<i128> {
    parse_milli(s).map(|m| (m + 999).div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases = [
            ("1", 1000),
            ("250m", 250),
            ("0.5", 500),
            ("1.5", 1500),
            ("1k", 1_000_000),
            ("1Ki", 1_024_000),
            ("64Mi", 64 * 1024 * 1024 * 1000),
            ("1G", 1_000_000_000_000),
            ("1e3", 1_000_000),
            ("0.1m", 1),
        ];
        for (s, want) in cases {
            assert_eq!(parse_milli(s), Some(want), "{s}");
        }
        for bad in ["", "abc", "1x", "Mi", "1.2.3"] {
            assert_eq!(parse_milli(bad), None, "{bad}");
        }
        assert_eq!(parse_units("64Mi"), Some(67_108_864));
        assert_eq!(parse_units("100m"), Some(1));
    }
}
