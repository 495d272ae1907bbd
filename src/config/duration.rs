//! Envoy's protobuf `Duration` as it appears in YAML: the JSON form `"<seconds>s"` with an optional
//! fraction (`"0.25s"`, `"5s"`), or the message form `{seconds, nanos}`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::time::Duration;

/// protobuf's upper bound (10 000 years); anything past it is a typo, not a timeout.
const MAX_SECONDS: u64 = 315_576_000_000;

/// "Never expires": what Envoy means by a `0s` timeout, and the ceiling every parsed duration is
/// clamped to. About 100 years, so that `Instant::now() + NEVER` cannot overflow while any
/// timeout a human would write stays exact.
pub const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Envoy's reading of a timeout: `0s` disables it.
pub fn zero_is_never(d: Duration) -> Duration {
    if d.is_zero() {
        NEVER
    } else {
        d
    }
}

/// A parsed duration field. The newtype exists so that the parse error is raised inside
/// deserialization, where serde_norway knows the line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like \"0.25s\", got \"{text}\"");
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("a duration must not be negative, got \"{text}\""));
    }
    let Some(number) = trimmed.strip_suffix('s') else {
        return Err(bad());
    };
    if let Some(hint) = unit_hint(trimmed) {
        return Err(format!("{}; Envoy durations are in seconds, write \"{hint}\"", bad()));
    }
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || fraction.len() > 9
    {
        return Err(bad());
    }
    let seconds: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    if seconds > MAX_SECONDS {
        return Err(format!("duration \"{text}\" is out of range"));
    }
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        // Right-pad to nine digits: "25" after the point is 250 000 000 ns.
        format!("{fraction:0<9}").parse().map_err(|_| bad())?
    };
    // Past NEVER, a timer could overflow an Instant; nobody can tell the difference.
    Ok(Duration::new(seconds, nanos).min(NEVER))
}

/// Operators coming from other proxies write "100ms" or "5m"; Envoy rejects those, and so do we,
/// but we can say what they meant.
fn unit_hint(text: &str) -> Option<String> {
    let (number, per_unit): (&str, fn(u64) -> Duration) = if let Some(n) = text.strip_suffix("ms") {
        (n, Duration::from_millis)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, Duration::from_micros)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, Duration::from_nanos)
    } else {
        return None;
    };
    number.parse::<u64>().ok().map(|n| fmt_secs(per_unit(n)))
}

/// Formats as Envoy writes durations, so hints can be pasted back into the file.
pub fn fmt_secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        return format!("{}s", d.as_secs());
    }
    let frac = format!("{:09}", d.subsec_nanos());
    format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
}

fn unit_hint_for_minutes_or_hours(text: &str) -> Option<String> {
    let (n, mult) = if let Some(n) = text.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600)
    } else {
        return None;
    };
    let n: u64 = n.parse().ok()?;
    Some(format!("{}s", n.checked_mul(mult)?))
}

struct DurVisitor;

impl<'de> Visitor<'de> for DurVisitor {
    type Value = Dur;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration like \"0.25s\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
        if let Some(hint) = unit_hint_for_minutes_or_hours(v.trim()) {
            return Err(E::custom(format!(
                "expected a duration like \"0.25s\", got \"{v}\"; Envoy durations are in seconds, write \"{hint}\""
            )));
        }
        parse(v).map(Dur).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
        Err(E::custom(format!(
            "expected a duration like \"0.25s\", got {v}; Envoy durations are strings, write \"{v}s\""
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
        Err(E::custom(format!(
            "expected a duration like \"0.25s\", got {v}; Envoy durations are strings, write \"{v}s\""
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
        Err(E::custom(format!(
            "expected a duration like \"0.25s\", got {v}; Envoy durations are strings, write \"{v}s\""
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dur, A::Error> {
        let mut seconds: Option<i64> = None;
        let mut nanos: Option<i64> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "seconds" => seconds = Some(map.next_value()?),
                "nanos" => nanos = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, &["seconds", "nanos"])),
            }
        }
        let seconds = seconds.unwrap_or(0);
        let nanos = nanos.unwrap_or(0);
        if seconds < 0 || nanos < 0 {
            return Err(de::Error::custom("a duration must not be negative"));
        }
        if nanos >= 1_000_000_000 {
            return Err(de::Error::custom(format!("nanos must be below 1000000000, got {nanos}")));
        }
        let seconds = seconds as u64;
        if seconds > MAX_SECONDS {
            return Err(de::Error::custom(format!("duration of {seconds} seconds is out of range")));
        }
        Ok(Dur(Duration::new(seconds, nanos as u32).min(NEVER)))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_json_form() {
        assert_eq!(parse("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0.000000001s"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn rejects_what_envoy_rejects_with_a_hint() {
        assert_eq!(parse("fast"), Err("expected a duration like \"0.25s\", got \"fast\"".to_string()));
        let ms = parse("100ms").unwrap_err();
        assert!(ms.contains("write \"0.1s\""), "{ms}");
        assert!(parse("s").is_err());
        assert!(parse("1.s2").is_err());
        assert!(parse("0.0000000001s").is_err());
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("99999999999999999999s").is_err());
    }

    #[test]
    fn huge_durations_saturate_at_never_and_past_protobufs_range_are_refused() {
        assert_eq!(parse("315576000000s"), Ok(NEVER));
        assert_eq!(parse("9999999999.5s"), Ok(NEVER));
        assert!(parse("315576000001s").unwrap_err().contains("out of range"));
        assert!(std::time::Instant::now().checked_add(NEVER).is_some());
        assert_eq!(zero_is_never(Duration::ZERO), NEVER);
        assert_eq!(zero_is_never(Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn formats_back() {
        assert_eq!(fmt_secs(Duration::from_millis(250)), "0.25s");
        assert_eq!(fmt_secs(Duration::from_secs(3)), "3s");
    }
}
