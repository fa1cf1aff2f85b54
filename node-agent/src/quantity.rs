//! Kubernetes resource quantities (`64Mi`, `500m`, `1e3`) and the kubelet's conversions of
//! them into CRI's Linux resources (cpu shares, cpu quota, memory limit).
//!
//! Values are computed exactly in `i128` (mantissa digits times a power of two or ten) and
//! rounded up, as apimachinery's `Value()` and `MilliValue()` do.

use crate::AgentError;

/// CFS period the kubelet uses for cpu quotas, in microseconds.
pub const CPU_PERIOD_US: i64 = 100_000;
/// The smallest cpu shares value the kernel accepts (and the kubelet's best-effort value).
pub const MIN_SHARES: i64 = 2;
/// The largest cpu shares value the kernel accepts.
pub const MAX_SHARES: i64 = 262_144;
/// The smallest quota the kubelet sets: 1 ms per period.
pub const MIN_QUOTA_US: i64 = 1_000;

fn invalid(value: &str, reason: &'static str) -> AgentError {
    AgentError::InvalidQuantity {
        value: value.to_owned(),
        reason,
    }
}

/// A parsed quantity: `mantissa * 10^-frac_digits * 2^bin_exp * 10^dec_exp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    mantissa: i128,
    frac_digits: u32,
    bin_exp: u32,
    dec_exp: i32,
}

fn parse(value: &str) -> Result<Parsed, AgentError> {
    let s = value.trim();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        Some(_) => (false, s),
        None => return Err(invalid(value, "empty")),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    if number.is_empty() || number == "." {
        return Err(invalid(value, "no digits"));
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if frac_part.contains('.') {
        return Err(invalid(value, "more than one decimal point"));
    }
    let mut mantissa: i128 = 0;
    for d in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(d - b'0')))
            .ok_or_else(|| invalid(value, "too large"))?;
    }
    if negative {
        mantissa = -mantissa;
    }
    let frac_digits = u32::try_from(frac_part.len()).map_err(|_| invalid(value, "too long"))?;
    let (bin_exp, dec_exp) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| invalid(value, "bad exponent"))?;
            if !(-40..=40).contains(&exp) {
                return Err(invalid(value, "exponent out of range"));
            }
            (0, exp)
        }
        _ => return Err(invalid(value, "unknown suffix")),
    };
    Ok(Parsed {
        mantissa,
        frac_digits,
        bin_exp,
        dec_exp,
    })
}

/// The quantity times `10^scale`, rounded up (towards positive infinity).
fn scaled_ceil(value: &str, scale: i32) -> Result<i64, AgentError> {
    let p = parse(value)?;
    let too_large = || invalid(value, "too large");
    let pow10 = |e: u32| 10i128.checked_pow(e).ok_or_else(too_large);
    let exp10 = p.dec_exp + scale - i32::try_from(p.frac_digits).map_err(|_| too_large())?;
    let mut num = p
        .mantissa
        .checked_mul(1i128 << p.bin_exp)
        .ok_or_else(too_large)?;
    let mut den: i128 = 1;
    if exp10 >= 0 {
        num = num
            .checked_mul(pow10(exp10.unsigned_abs())?)
            .ok_or_else(too_large)?;
    } else {
        den = pow10(exp10.unsigned_abs())?;
    }
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    let v = if r > 0 { q + 1 } else { q };
    i64::try_from(v).map_err(|_| too_large())
}

/// The quantity as an integer, rounded up (`Quantity.Value()`): bytes for memory.
pub fn to_value(value: &str) -> Result<i64, AgentError> {
    scaled_ceil(value, 0)
}

/// The quantity in thousandths, rounded up (`Quantity.MilliValue()`): milli-CPUs for cpu.
pub fn to_milli(value: &str) -> Result<i64, AgentError> {
    scaled_ceil(value, 3)
}

/// cgroup cpu shares for a cpu request in milli-CPUs (kubelet `MilliCPUToShares`).
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota in microseconds per [`CPU_PERIOD_US`] for a cpu limit in milli-CPUs
/// (kubelet `MilliCPUToQuota`); 0 means no limit.
pub fn milli_cpu_to_quota(milli_cpu: i64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_QUOTA_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_up_like_apimachinery() {
        let cases: &[(&str, i64)] = &[
            ("64Mi", 64 * 1024 * 1024),
            ("1G", 1_000_000_000),
            ("1Ki", 1024),
            ("1e3", 1000),
            ("1E3", 1000),
            ("0.5", 1),
            ("500m", 1),
            ("1.5Gi", 1_610_612_736),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("123Mi", 128_974_848),
            ("2E", 2_000_000_000_000_000_000),
            ("0", 0),
            ("-1", -1),
        ];
        for (q, want) in cases {
            assert_eq!(to_value(q).ok(), Some(*want), "value of {q}");
        }
    }

    #[test]
    fn milli_values() {
        let cases: &[(&str, i64)] = &[
            ("500m", 500),
            ("0.5", 500),
            ("1", 1000),
            ("2", 2000),
            ("100m", 100),
            ("1e3", 1_000_000),
            ("1n", 1),
            ("0.0001", 1),
            ("250u", 1),
            (".25", 250),
        ];
        for (q, want) in cases {
            assert_eq!(to_milli(q).ok(), Some(*want), "milli of {q}");
        }
    }

    #[test]
    fn bad_quantities_are_errors() {
        for q in [
            "", "abc", "1.2.3", "12Q", "1e", "1ee3", "Mi", "1e999", "99999Ei",
        ] {
            assert!(to_value(q).is_err(), "{q:?} should not parse");
        }
    }

    #[test]
    fn cpu_shares_follow_the_kubelet() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(500), 512);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
    }

    #[test]
    fn cpu_quota_follows_the_kubelet() {
        assert_eq!(milli_cpu_to_quota(0), 0);
        assert_eq!(milli_cpu_to_quota(5), MIN_QUOTA_US);
        assert_eq!(milli_cpu_to_quota(250), 25_000);
        assert_eq!(milli_cpu_to_quota(1500), 150_000);
    }
}
