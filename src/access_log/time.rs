//! `%START_TIME(...)%`: an strftime subset parsed once into pieces and rendered into the line
//! without a date crate and without allocating. Always UTC, as Envoy logs.

use super::num::{push_i64, push_padded, push_u64};
use std::time::{SystemTime, UNIX_EPOCH};

/// Envoy's default `%START_TIME%` format.
pub(crate) const DEFAULT: &str = "%Y-%m-%dT%H:%M:%E3SZ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimePiece {
    Lit(Box<str>),
    Year,
    Year2,
    Month,
    Day,
    DaySpace,
    DayOfYear,
    Hour,
    Hour12,
    Minute,
    Second,
    /// `%E<n>S`: seconds with n fractional digits (n may be 0).
    SecondFrac(u8),
    /// `%f` / `%<n>f`: n fractional digits alone (Envoy's extension; `%f` is 9).
    Frac(u8),
    Epoch,
    WeekdayShort,
    WeekdayLong,
    MonthShort,
    MonthLong,
    AmPm,
    /// `%z`: `+0000`.
    Offset,
    /// `%Ez`: `+00:00`.
    OffsetColon,
    /// `%Z`: `UTC`.
    Zone,
}

/// Parses an strftime string. Never fails: an unknown `%x` is kept as text, as strftime does, so a
/// typo shows up in the log instead of refusing the config.
pub(crate) fn parse(spec: &str) -> Vec<TimePiece> {
    use TimePiece::*;
    let mut out = Parsed { pieces: Vec::new(), lit: String::new() };
    let bytes = spec.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy the run of text up to the next `%` whole, so multi-byte UTF-8 stays intact.
            let end = spec[i..].find('%').map_or(spec.len(), |n| i + n);
            out.lit.push_str(&spec[i..end]);
            i = end;
            continue;
        }
        let rest = &bytes[i + 1..];
        let used = match rest {
            [b'Y', ..] => out.one(Year),
            [b'y', ..] => out.one(Year2),
            [b'm', ..] => out.one(Month),
            [b'd', ..] => out.one(Day),
            [b'e', ..] => out.one(DaySpace),
            [b'j', ..] => out.one(DayOfYear),
            [b'H', ..] => out.one(Hour),
            [b'I', ..] => out.one(Hour12),
            [b'M', ..] => out.one(Minute),
            [b'S', ..] => out.one(Second),
            [b's', ..] => out.one(Epoch),
            [b'a', ..] => out.one(WeekdayShort),
            [b'A', ..] => out.one(WeekdayLong),
            [b'b' | b'h', ..] => out.one(MonthShort),
            [b'B', ..] => out.one(MonthLong),
            [b'p', ..] => out.one(AmPm),
            [b'z', ..] => out.one(Offset),
            [b'Z', ..] => out.one(Zone),
            [b'f', ..] => out.one(Frac(9)),
            [d @ b'1'..=b'9', b'f', ..] => out.one(Frac(d - b'0')) + 1,
            [b'E', d @ b'0'..=b'9', b'S', ..] => out.one(SecondFrac(d - b'0')) + 2,
            // absl's "as many digits as needed"; nanoseconds are all we have.
            [b'E', b'*', b'S', ..] => out.one(SecondFrac(9)) + 2,
            [b'E', b'z', ..] => out.one(OffsetColon) + 1,
            [b'T', ..] => out.many(&[Hour, Lit(":".into()), Minute, Lit(":".into()), Second]),
            [b'F', ..] => out.many(&[Year, Lit("-".into()), Month, Lit("-".into()), Day]),
            [b'D', ..] => out.many(&[Month, Lit("/".into()), Day, Lit("/".into()), Year2]),
            [b'R', ..] => out.many(&[Hour, Lit(":".into()), Minute]),
            [b'n', ..] => out.text("\n"),
            [b't', ..] => out.text("\t"),
            [b'%', ..] => out.text("%"),
            // Unknown or trailing `%`: kept as written; the next character is copied as text.
            _ => out.text("%") - 1,
        };
        i += 1 + used;
    }
    out.finish()
}

struct Parsed {
    pieces: Vec<TimePiece>,
    lit: String,
}

impl Parsed {
    fn flush(&mut self) {
        if !self.lit.is_empty() {
            self.pieces.push(TimePiece::Lit(std::mem::take(&mut self.lit).into_boxed_str()));
        }
    }

    /// Returns how many bytes after the `%` the specifier used (the caller adds its extra ones).
    fn one(&mut self, p: TimePiece) -> usize {
        self.flush();
        self.pieces.push(p);
        1
    }

    fn many(&mut self, ps: &[TimePiece]) -> usize {
        self.flush();
        self.pieces.extend(ps.iter().cloned());
        1
    }

    fn text(&mut self, t: &str) -> usize {
        self.lit.push_str(t);
        1
    }

    fn finish(mut self) -> Vec<TimePiece> {
        self.flush();
        self.pieces
    }
}

/// A broken-down UTC time, computed once per rendered `%START_TIME%`.
struct Civil {
    secs: i64,
    nanos: u32,
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Days since 1970-01-01 (for the weekday).
    days: i64,
}

impl Civil {
    fn new(t: SystemTime) -> Civil {
        // Before 1970 only from a broken clock; floor so the fields stay in range anyway.
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2), d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let s = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
                match d.subsec_nanos() {
                    0 => (s, 0),
                    n => (s - 1, 1_000_000_000 - n),
                }
            }
        };
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            secs,
            nanos,
            year,
            month,
            day,
            // All below 86 400, so the narrowing cannot lose anything.
            hour: (of_day / 3_600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
            days,
        }
    }

    fn day_of_year(&self) -> u32 {
        const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let leap = (self.year % 4 == 0 && self.year % 100 != 0) || self.year % 400 == 0;
        let m = (self.month as usize).saturating_sub(1).min(11);
        BEFORE[m] + self.day + u32::from(leap && self.month > 2)
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day) in the
/// proleptic Gregorian calendar; eras of 400 years make the leap rules need no special cases.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Appends `t` as `pieces` say.
pub(crate) fn render(pieces: &[TimePiece], t: SystemTime, out: &mut Vec<u8>) {
    use TimePiece::*;
    let c = Civil::new(t);
    let weekday = WEEKDAYS[c.days.saturating_add(4).rem_euclid(7) as usize];
    let month = MONTHS[(c.month as usize).saturating_sub(1).min(11)];
    for p in pieces {
        match p {
            Lit(s) => out.extend_from_slice(s.as_bytes()),
            Year => push_year(c.year, out),
            Year2 => push_padded(c.year.rem_euclid(100) as u64, 2, out),
            Month => push_padded(c.month.into(), 2, out),
            Day => push_padded(c.day.into(), 2, out),
            DaySpace => {
                if c.day < 10 {
                    out.push(b' ');
                }
                push_u64(c.day.into(), out);
            }
            DayOfYear => push_padded(c.day_of_year().into(), 3, out),
            Hour => push_padded(c.hour.into(), 2, out),
            Hour12 => push_padded(u64::from((c.hour + 11) % 12 + 1), 2, out),
            Minute => push_padded(c.minute.into(), 2, out),
            Second => push_padded(c.second.into(), 2, out),
            SecondFrac(n) => {
                push_padded(c.second.into(), 2, out);
                if *n > 0 {
                    out.push(b'.');
                    push_frac(c.nanos, *n, out);
                }
            }
            Frac(n) => push_frac(c.nanos, *n, out),
            Epoch => push_i64(c.secs, out),
            WeekdayShort => out.extend_from_slice(&weekday.as_bytes()[..3]),
            WeekdayLong => out.extend_from_slice(weekday.as_bytes()),
            MonthShort => out.extend_from_slice(&month.as_bytes()[..3]),
            MonthLong => out.extend_from_slice(month.as_bytes()),
            AmPm => out.extend_from_slice(if c.hour < 12 { b"AM" } else { b"PM" }),
            Offset => out.extend_from_slice(b"+0000"),
            OffsetColon => out.extend_from_slice(b"+00:00"),
            Zone => out.extend_from_slice(b"UTC"),
        }
    }
}

fn push_year(year: i64, out: &mut Vec<u8>) {
    if (0..10_000).contains(&year) {
        push_padded(year as u64, 4, out);
    } else {
        push_i64(year, out);
    }
}

/// The first `digits` (1..=9) digits of the nanoseconds, truncated as Envoy does.
fn push_frac(nanos: u32, digits: u8, out: &mut Vec<u8>) {
    let digits = u32::from(digits.clamp(1, 9));
    let value = nanos.min(999_999_999) / 10u32.pow(9 - digits);
    push_padded(value.into(), digits as usize, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2021-03-04 05:06:07.123456789 UTC, a Thursday.
    fn t() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_614_834_367, 123_456_789)
    }

    fn fmt(spec: &str, at: SystemTime) -> String {
        let mut out = Vec::new();
        render(&parse(spec), at, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn envoy_default() {
        assert_eq!(fmt(DEFAULT, t()), "2021-03-04T05:06:07.123Z");
    }

    #[test]
    fn specifiers() {
        assert_eq!(fmt("%s", t()), "1614834367");
        assert_eq!(fmt("%s.%3f", t()), "1614834367.123");
        assert_eq!(fmt("%6f|%9f|%f|%1f", t()), "123456|123456789|123456789|1");
        assert_eq!(fmt("%E6S|%E0S|%E*S", t()), "07.123456|07|07.123456789");
        assert_eq!(fmt("%Y/%m/%d %H:%M:%S %z %Ez %Z", t()), "2021/03/04 05:06:07 +0000 +00:00 UTC");
        assert_eq!(fmt("%F %T", t()), "2021-03-04 05:06:07");
        assert_eq!(fmt("%D %R", t()), "03/04/21 05:06");
        assert_eq!(fmt("%a %A %b %B %h %j %e %I %p", t()), "Thu Thursday Mar March Mar 063 \u{20}4 05 AM");
        assert_eq!(fmt("100%% %n%t", t()), "100% \n\t");
    }

    #[test]
    fn unknown_and_trailing_percent_are_text() {
        assert_eq!(fmt("%Q %", t()), "%Q %");
        assert_eq!(fmt("%E", t()), "%E");
        assert_eq!(fmt("%9", t()), "%9");
        assert_eq!(fmt("é%Yü", t()), "é2021ü");
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(fmt("%F %T %j %a", UNIX_EPOCH), "1970-01-01 00:00:00 001 Thu");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(fmt("%F %j %a", leap_day), "2000-02-29 060 Tue");
        let new_year_eve = UNIX_EPOCH + Duration::from_secs(1_704_067_199); // 2023-12-31 23:59:59
        assert_eq!(fmt("%F %T %j %I %p", new_year_eve), "2023-12-31 23:59:59 365 11 PM");
        let before = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(fmt("%F %T.%3f", before), "1969-12-31 23:59:59.999");
    }
}
