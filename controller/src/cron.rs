//! Cron schedules as Kubernetes' CronJob controller reads them (robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week) with `*`, `?`, ranges, steps,
//! lists and month and weekday names; the `@yearly`, `@annually`, `@monthly`, `@weekly`,
//! `@daily`, `@midnight` and `@hourly` macros and `@every <duration>`; a leading `TZ=` or
//! `CRON_TZ=`. Times are computed in a time zone (the CronJob's `timeZone`, else UTC), so a
//! daily job keeps its wall-clock hour across daylight saving changes.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan as _};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Fields(Fields),
    /// `@every <duration>`.
    Every(SignedDuration),
}

/// The allowed values of each field, one bit per value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Whether day of month or day of week was `*`: then a day matches when both do, else
    /// when either does (cron's rule).
    dom_star: bool,
    dow_star: bool,
}

/// A schedule with its time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    pub schedule: Schedule,
    pub tz: TimeZone,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn number(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + offset);
    }
    if s.starts_with('-') {
        return Err(format!("negative number ({s}) not allowed: {s}"));
    }
    s.parse::<u32>()
        .map_err(|e| format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: {e}"))
}

/// One comma-separated part of a field (`*`, `a`, `a-b`, with an optional `/step`).
fn range(expr: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let (spec, step) = match expr.split('/').collect::<Vec<_>>()[..] {
        [r] => (r, None),
        [r, s] => (r, Some(s)),
        _ => return Err(format!("too many slashes: {expr}")),
    };
    let star = spec == "*" || spec == "?";
    let (lo, hi) = if star {
        (min, max)
    } else {
        match spec.split('-').collect::<Vec<_>>()[..] {
            [a] => {
                let a = number(a, names, if names.len() == 12 { 1 } else { 0 })?;
                (a, if step.is_some() { max } else { a })
            }
            [a, b] => {
                let off = if names.len() == 12 { 1 } else { 0 };
                (number(a, names, off)?, number(b, names, off)?)
            }
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let n = number(s, &[], 0)?;
            if n == 0 {
                return Err(format!("step of range should be a positive number: {expr}"));
            }
            n
        }
    };
    if lo < min {
        return Err(format!(
            "beginning of range ({lo}) below minimum ({min}): {expr}"
        ));
    }
    if hi > max {
        return Err(format!("end of range ({hi}) above maximum ({max}): {expr}"));
    }
    if lo > hi {
        return Err(format!(
            "beginning of range ({lo}) beyond end of range ({hi}): {expr}"
        ));
    }
    let mut bits = 0u64;
    let mut v = lo;
    while v <= hi {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star && step == 1))
}

fn field(expr: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let mut bits = 0;
    let mut star = false;
    for part in expr.split(',') {
        let (b, s) = range(part, min, max, names)?;
        bits |= b;
        star |= s;
    }
    Ok((bits, star))
}

/// A Go duration for `@every`: `1h30m`, `90s`, `500ms`.
fn go_duration(s: &str) -> Result<SignedDuration, String> {
    let bad = || format!("failed to parse duration @every {s}: time: invalid duration {s:?}");
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(n);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let u = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        total += v * match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(bad()),
        };
        rest = tail;
    }
    Ok(SignedDuration::from_secs_f64(total))
}

/// Parses a schedule; `TZ=`/`CRON_TZ=` prefixes are accepted here (the API refuses them).
pub fn parse(spec: &str) -> Result<Cron, String> {
    let mut spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".to_owned());
    }
    let mut tz = TimeZone::UTC;
    if let Some(rest) = spec
        .strip_prefix("TZ=")
        .or_else(|| spec.strip_prefix("CRON_TZ="))
    {
        let (zone, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        tz = TimeZone::get(zone).map_err(|e| format!("provided bad location {zone}: {e}"))?;
        spec = tail.trim();
    }
    let expanded = match spec {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        s if s.starts_with("@every ") => {
            return Ok(Cron {
                schedule: Schedule::Every(go_duration(s.trim_start_matches("@every ").trim())?),
                tz,
            });
        }
        s if s.starts_with('@') => return Err(format!("unrecognized descriptor: {s}")),
        s => s,
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            parts.len(),
            parts.join(" ")
        ));
    }
    let (minute, _) = field(parts[0], 0, 59, &[])?;
    let (hour, _) = field(parts[1], 0, 23, &[])?;
    let (dom, dom_star) = field(parts[2], 1, 31, &[])?;
    let (month, _) = field(parts[3], 1, 12, MONTHS)?;
    let (dow, dow_star) = field(parts[4], 0, 6, DAYS)?;
    Ok(Cron {
        schedule: Schedule::Fields(Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        }),
        tz,
    })
}

fn has(bits: u64, v: i8) -> bool {
    v >= 0 && bits & (1 << v) != 0
}

impl Fields {
    fn day_matches(&self, t: DateTime) -> bool {
        let dom = has(self.dom, t.day());
        let dow = has(self.dow, t.weekday().to_sunday_zero_offset());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

impl Cron {
    /// The first scheduled time strictly after `after`, or `None` when there is none within
    /// five years (a date like February 30th).
    pub fn next(&self, after: Timestamp) -> Option<Timestamp> {
        let f = match &self.schedule {
            Schedule::Every(d) => {
                // robfig rounds the delay to the second and the start down to it.
                let base = Timestamp::from_second(after.as_second()).ok()?;
                let step = SignedDuration::from_secs(d.as_secs().max(1));
                return base.checked_add(step).ok();
            }
            Schedule::Fields(f) => f,
        };
        let zoned = after.to_zoned(self.tz.clone());
        let start = zoned.datetime();
        let mut t = DateTime::new(
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
            0,
            0,
        )
        .ok()?
        .checked_add(1.minute())
        .ok()?;
        let limit = start.year() + 5;
        while t.year() <= limit {
            if !has(f.month, t.month()) {
                t = DateTime::new(t.year(), t.month(), 1, 0, 0, 0, 0)
                    .ok()?
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            if !f.day_matches(t) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(jiff::civil::time(0, 0, 0, 0));
                continue;
            }
            if !has(f.hour, t.hour()) {
                t = DateTime::new(t.year(), t.month(), t.day(), t.hour(), 0, 0, 0)
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(f.minute, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = self.tz.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn fields_macros_and_names() {
        let c = parse("*/15 9-17 * * mon-fri").unwrap();
        assert_eq!(
            c.next(ts("2026-12-04T16:50:00Z")),
            Some(ts("2026-12-04T17:00:00Z"))
        );
        // Friday 17:45 → Monday 09:00.
        assert_eq!(
            c.next(ts("2026-12-04T17:45:00Z")),
            Some(ts("2026-12-07T09:00:00Z"))
        );
        let h = parse("@hourly").unwrap();
        assert_eq!(
            h.next(ts("2026-12-06T20:00:00Z")),
            Some(ts("2026-12-06T21:00:00Z"))
        );
        let y = parse("@yearly").unwrap();
        assert_eq!(
            y.next(ts("2026-06-01T00:00:00Z")),
            Some(ts("2027-01-01T00:00:00Z"))
        );
        // Day of month OR day of week when both are restricted.
        let c = parse("0 0 13 * fri").unwrap();
        assert_eq!(
            c.next(ts("2026-12-05T00:00:00Z")),
            Some(ts("2026-12-11T00:00:00Z"))
        );
        let e = parse("@every 90s").unwrap();
        assert_eq!(
            e.next(ts("2026-12-06T20:00:00.5Z")),
            Some(ts("2026-12-06T20:01:30Z"))
        );
    }

    #[test]
    fn time_zones_keep_the_wall_clock() {
        let c = parse("TZ=Europe/Berlin 30 2 * * *").unwrap();
        // 02:30 Berlin in winter is 01:30 UTC.
        assert_eq!(
            c.next(ts("2026-12-06T00:00:00Z")),
            Some(ts("2026-12-06T01:30:00Z"))
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |s: &str| parse(s).unwrap_err();
        assert_eq!(e("foo"), "expected exactly 5 fields, found 1: [foo]");
        assert_eq!(e("61 * * * *"), "end of range (61) above maximum (59): 61");
        assert_eq!(e("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(
            e("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(e("@fortnightly"), "unrecognized descriptor: @fortnightly");
        assert!(
            e("TZ=Nowhere/Atlantis * * * * *")
                .starts_with("provided bad location Nowhere/Atlantis")
        );
        assert!(
            parse("0 0 30 2 *")
                .unwrap()
                .next(ts("2026-01-01T00:00:00Z"))
                .is_none()
        );
    }
}
