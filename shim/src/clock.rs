//! UTC wall-clock times as the CRI log and the kubelet's rotation names write them, computed
//! from the Unix time (days to civil dates by Howard Hinnant's algorithm).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

pub fn now() -> Time {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(_) => Time { secs: 0, nanos: 0 },
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    let t = now();
    t.secs.saturating_mul(1_000_000_000) + i64::from(t.nanos)
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn parts(t: Time) -> (i64, u32, u32, i64, i64, i64) {
    let (days, rem) = (t.secs.div_euclid(86_400), t.secs.rem_euclid(86_400));
    let (y, mo, d) = civil(days);
    (y, mo, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `2024-01-02T03:04:05.123456789Z`.
pub fn rfc3339_nano(t: Time) -> String {
    let (y, mo, d, h, mi, s) = parts(t);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:09}Z",
        t.nanos
    )
}

/// `20240102-030405`, the kubelet's suffix for rotated logs.
pub fn rotation_stamp(t: Time) -> String {
    let (y, mo, d, h, mi, s) = parts(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_agree_with_a_date_library() {
        for secs in [
            0,
            951_782_400,   // 2000-02-29
            1_700_000_000, // 2023-11-14T22:13:20Z
            4_102_444_799, // 2099-12-31T23:59:59Z
            -86_400,
        ] {
            let t = Time {
                secs,
                nanos: 123_456_789,
            };
            let want = jiff::Timestamp::new(secs, 123_456_789).expect("ts");
            assert_eq!(rfc3339_nano(t), format!("{want:.9}"), "{secs}");
            assert_eq!(
                rotation_stamp(t),
                want.strftime("%Y%m%d-%H%M%S").to_string(),
                "{secs}"
            );
        }
    }

    #[test]
    fn now_is_after_2024() {
        assert!(now().secs > 1_704_067_200);
        assert!(now_ns() > 1_704_067_200_000_000_000);
    }
}
