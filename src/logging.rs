//! The process logger: Envoy's `-l/--log-level` levels and its spdlog-style `--log-format`
//! (`%Y-%m-%d %T.%e`, `%t`, `%l`, `%n`, `%v`, ...), written to stderr. The level can change live.
//!
//! The pattern is parsed once, at `init`, into pieces; each line is rendered into a per-thread
//! buffer and handed to stderr in one `write_all`, so lines from different shards never interleave.
//! Logging never fails the process: write errors are dropped, as Envoy does.

use crate::access_log::time::civil_from_days;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Envoy's default `--log-format`.
pub const DEFAULT_FORMAT: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] %v";

/// Installs the logger. `format` is Envoy's `--log-format` (None: Envoy's default
/// `[%Y-%m-%d %T.%e][%t][%l][%n] %v`). The `log` facade takes one logger per process, so a later
/// call only changes the level; the first format stays.
pub fn init(level: LevelFilter, format: Option<&str>) {
    LOGGER.pattern.get_or_init(|| Pattern::parse(format.unwrap_or(DEFAULT_FORMAT)));
    // Fails only when a logger is already installed: ours from an earlier call, or a test harness's.
    let _ = log::set_logger(&LOGGER);
    set_level(level);
}

/// Changes the level live (Envoy's admin `/logging?level=`); takes effect on every thread at once.
pub fn set_level(level: LevelFilter) {
    LOGGER.level.store(level as usize, Ordering::Relaxed);
    log::set_max_level(level);
}

/// The level in force.
pub fn level() -> LevelFilter {
    level_from_usize(LOGGER.level.load(Ordering::Relaxed))
}

/// Parses Envoy's level names: trace, debug, info, warning/warn, error, critical, off.
/// `log` has no level above error, so critical is error.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    let level = match name.trim().to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::Trace,
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warning" | "warn" => LevelFilter::Warn,
        "error" | "err" | "critical" => LevelFilter::Error,
        "off" => LevelFilter::Off,
        _ => return None,
    };
    Some(level)
}

/// The name Envoy prints for a level (`%l`).
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warning",
        Level::Error => "error",
    }
}

fn level_from_usize(n: usize) -> LevelFilter {
    LevelFilter::iter().find(|l| *l as usize == n).unwrap_or(LevelFilter::Info)
}

struct Logger {
    level: AtomicUsize,
    pattern: OnceLock<Pattern>,
}

static LOGGER: Logger =
    Logger { level: AtomicUsize::new(LevelFilter::Info as usize), pattern: OnceLock::new() };

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    static TID: u64 = thread_id();
}

fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    u64::try_from(tid).unwrap_or(0)
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() as usize <= self.level.load(Ordering::Relaxed)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(pattern) = self.pattern.get() else {
            return;
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let tid = TID.try_with(|t| *t).unwrap_or(0);
        let write = |line: &mut String| {
            line.clear();
            pattern.render(record, now, tid, line);
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        };
        // A Display impl inside the message may itself log (re-entering the buffer), and the
        // thread-local is gone during thread teardown; both fall back to a one-off String.
        let done = LINE
            .try_with(|buf| match buf.try_borrow_mut() {
                Ok(mut line) => {
                    write(&mut line);
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false);
        if !done {
            write(&mut String::new());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// A parsed `--log-format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Field, Option<Pad>),
}

/// spdlog's `%<width>`, `%-<width>`, `%=<width>` with an optional `!` to truncate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pad {
    width: usize,
    align: Align,
    truncate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
    Center,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Year,
    ShortYear,
    Month,
    Day,
    Hour,
    Hour12,
    AmPm,
    Minute,
    Second,
    Millis,
    Micros,
    Nanos,
    EpochSeconds,
    Date,
    Time,
    HourMinute,
    TzOffset,
    Thread,
    Pid,
    Level,
    ShortLevel,
    Name,
    Message,
    /// Envoy's `%_`: the message with newlines escaped, so one record stays one line.
    MessageEscapedNewlines,
    /// Envoy's `%j`: the message escaped for embedding in a JSON string.
    MessageJson,
    Source,
    ShortFile,
    File,
    Line,
    /// `log` records carry no function name; the module path is the closest it has.
    Function,
    /// spdlog's colour range markers: stderr here is plain text.
    Nothing,
}

impl Field {
    fn from_flag(c: char) -> Option<Field> {
        Some(match c {
            'Y' => Field::Year,
            'C' => Field::ShortYear,
            'm' => Field::Month,
            'd' => Field::Day,
            'H' => Field::Hour,
            'I' => Field::Hour12,
            'p' => Field::AmPm,
            'M' => Field::Minute,
            'S' => Field::Second,
            'e' => Field::Millis,
            'f' => Field::Micros,
            'F' => Field::Nanos,
            'E' => Field::EpochSeconds,
            'D' | 'x' => Field::Date,
            'T' | 'X' => Field::Time,
            'R' => Field::HourMinute,
            'z' => Field::TzOffset,
            't' => Field::Thread,
            'P' => Field::Pid,
            'l' => Field::Level,
            'L' => Field::ShortLevel,
            'n' => Field::Name,
            'v' => Field::Message,
            '_' => Field::MessageEscapedNewlines,
            'j' => Field::MessageJson,
            '@' => Field::Source,
            's' => Field::ShortFile,
            'g' => Field::File,
            '#' => Field::Line,
            '!' => Field::Function,
            '^' | '$' => Field::Nothing,
            _ => return None,
        })
    }
}

impl Pattern {
    /// Parses an spdlog pattern. Never fails: an unknown flag, or a `%` at the end, is kept as
    /// literal text so that a typo shows up in the output instead of stopping the proxy.
    pub fn parse(pattern: &str) -> Pattern {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = pattern;
        while let Some(pos) = rest.find('%') {
            literal.push_str(&rest[..pos]);
            let spec = &rest[pos + 1..];
            if let Some(tail) = spec.strip_prefix('%') {
                literal.push('%');
                rest = tail;
                continue;
            }
            let (pad, after_pad) = parse_pad(spec);
            let flag = after_pad.chars().next();
            let flag_len = flag.map_or(0, char::len_utf8);
            match flag.and_then(Field::from_flag) {
                Some(field) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(field, pad));
                    rest = &after_pad[flag_len..];
                }
                None => {
                    // Verbatim: the `%`, any padding spec and the unknown character.
                    let consumed = spec.len() - after_pad.len() + flag_len;
                    literal.push('%');
                    literal.push_str(&spec[..consumed]);
                    rest = &spec[consumed..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Pattern { pieces }
    }

    /// Appends one line for `record` to `out`, newline included. Pure: the time since the epoch
    /// and the thread id are arguments, so the output is reproducible.
    pub fn render(&self, record: &Record, since_epoch: Duration, tid: u64, out: &mut String) {
        let line = Line::new(record, since_epoch, tid);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Field(field, None) => line.field(*field, out),
                Piece::Field(field, Some(pad)) => {
                    let start = out.len();
                    line.field(*field, out);
                    pad.apply(out, start);
                }
            }
        }
        out.push('\n');
    }
}

fn parse_pad(spec: &str) -> (Option<Pad>, &str) {
    let (align, digits) = match spec.as_bytes().first() {
        Some(b'-') => (Align::Left, &spec[1..]),
        Some(b'=') => (Align::Center, &spec[1..]),
        _ => (Align::Right, spec),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(width) = digits[..n].parse::<usize>() else {
        return (None, spec);
    };
    // spdlog caps widths at 64; a larger one is a typo, not a request for a huge column.
    let width = width.min(64);
    let (truncate, rest) = match digits[n..].strip_prefix('!') {
        Some(rest) if rest.chars().next().and_then(Field::from_flag).is_some() => (true, rest),
        _ => (false, &digits[n..]),
    };
    let pad = Pad { width, align, truncate };
    (Some(pad), rest)
}

impl Pad {
    fn apply(&self, out: &mut String, start: usize) {
        let len = out[start..].chars().count();
        if len > self.width {
            if self.truncate {
                let cut = out[start..].char_indices().nth(self.width).map_or(out.len(), |(i, _)| start + i);
                out.truncate(cut);
            }
            return;
        }
        let fill = self.width - len;
        let (before, after) = match self.align {
            Align::Left => (0, fill),
            Align::Right => (fill, 0),
            Align::Center => (fill / 2, fill - fill / 2),
        };
        out.insert_str(start, &" ".repeat(before));
        out.extend(std::iter::repeat_n(' ', after));
    }
}

/// What one record contributes to the line, with the civil time computed once.
struct Line<'a, 'r> {
    record: &'a Record<'r>,
    civil: Civil,
    since_epoch: Duration,
    tid: u64,
}

impl<'a, 'r> Line<'a, 'r> {
    fn new(record: &'a Record<'r>, since_epoch: Duration, tid: u64) -> Self {
        Line { record, civil: Civil::from_unix(since_epoch.as_secs()), since_epoch, tid }
    }

    fn field(&self, field: Field, out: &mut String) {
        let c = &self.civil;
        let nanos = self.since_epoch.subsec_nanos();
        // Writing to a String only fails if a Display impl in the message reports an error;
        // the partial text is still worth printing.
        let _ = match field {
            Field::Year => write!(out, "{:04}", c.year),
            Field::ShortYear => write!(out, "{:02}", c.year.rem_euclid(100)),
            Field::Month => write!(out, "{:02}", c.month),
            Field::Day => write!(out, "{:02}", c.day),
            Field::Hour => write!(out, "{:02}", c.hour),
            Field::Hour12 => write!(out, "{:02}", (c.hour + 11) % 12 + 1),
            Field::AmPm => write!(out, "{}", if c.hour < 12 { "AM" } else { "PM" }),
            Field::Minute => write!(out, "{:02}", c.minute),
            Field::Second => write!(out, "{:02}", c.second),
            Field::Millis => write!(out, "{:03}", nanos / 1_000_000),
            Field::Micros => write!(out, "{:06}", nanos / 1_000),
            Field::Nanos => write!(out, "{nanos:09}"),
            Field::EpochSeconds => write!(out, "{}", self.since_epoch.as_secs()),
            Field::Date => write!(out, "{:02}/{:02}/{:02}", c.month, c.day, c.year.rem_euclid(100)),
            Field::Time => write!(out, "{:02}:{:02}:{:02}", c.hour, c.minute, c.second),
            Field::HourMinute => write!(out, "{:02}:{:02}", c.hour, c.minute),
            Field::TzOffset => write!(out, "+00:00"),
            Field::Thread => write!(out, "{}", self.tid),
            Field::Pid => write!(out, "{}", std::process::id()),
            Field::Level => write!(out, "{}", level_name(self.record.level())),
            Field::ShortLevel => write!(out, "{}", short_level(self.record.level())),
            Field::Name => write!(out, "{}", logger_name(self.record.target())),
            Field::Message => write!(out, "{}", self.record.args()),
            Field::MessageEscapedNewlines => {
                let start = out.len();
                let r = write!(out, "{}", self.record.args());
                if out[start..].contains('\n') {
                    let escaped = out[start..].replace('\n', "\\n");
                    out.truncate(start);
                    out.push_str(&escaped);
                }
                r
            }
            Field::MessageJson => {
                let mut message = String::new();
                let r = write!(message, "{}", self.record.args());
                json_escape(&message, out);
                r
            }
            Field::Source => match (self.record.file(), self.record.line()) {
                (Some(file), Some(line)) => write!(out, "{file}:{line}"),
                _ => Ok(()),
            },
            Field::ShortFile => {
                let file = self.record.file().unwrap_or("");
                write!(out, "{}", file.rsplit('/').next().unwrap_or(file))
            }
            Field::File => write!(out, "{}", self.record.file().unwrap_or("")),
            Field::Line => match self.record.line() {
                Some(line) => write!(out, "{line}"),
                None => Ok(()),
            },
            Field::Function => write!(out, "{}", self.record.module_path().unwrap_or("")),
            Field::Nothing => Ok(()),
        };
    }
}

fn short_level(level: Level) -> char {
    match level {
        Level::Trace => 'T',
        Level::Debug => 'D',
        Level::Info => 'I',
        Level::Warn => 'W',
        Level::Error => 'E',
    }
}

/// Envoy names its loggers by subsystem (`upstream`, `http`, `config`); the last segment of the
/// module path (`skiff::http::codec` → `codec`) is the nearest equivalent.
fn logger_name(target: &str) -> &str {
    match target.rsplit("::").next() {
        Some(name) if !name.is_empty() => name,
        _ => "skiff",
    }
}

fn json_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// A UTC calendar time.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn from_unix(secs: u64) -> Civil {
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let of_day = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            // All below 86 400, so the narrowing cannot lose anything.
            hour: (of_day / 3_600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2021-03-04 05:06:07.123456789 UTC.
    const T: Duration = Duration::new(1_614_834_367, 123_456_789);

    fn render_with(pattern: &str, level: Level, target: &str, message: &str) -> String {
        let mut out = String::new();
        Pattern::parse(pattern).render(
            &Record::builder()
                .level(level)
                .target(target)
                .file(Some("src/http/codec.rs"))
                .line(Some(42))
                .module_path(Some("skiff::http::codec"))
                .args(format_args!("{message}"))
                .build(),
            T,
            77,
            &mut out,
        );
        out
    }

    fn render(pattern: &str) -> String {
        render_with(pattern, Level::Info, "skiff::upstream", "hello")
    }

    #[test]
    fn seed_format() {
        assert_eq!(
            render("[METADATA][%Y-%m-%d %T.%e][%t][%l][%n] %v"),
            "[METADATA][2021-03-04 05:06:07.123][77][info][upstream] hello\n"
        );
    }

    #[test]
    fn default_format() {
        assert_eq!(render(DEFAULT_FORMAT), "[2021-03-04 05:06:07.123][77][info][upstream] hello\n");
    }

    #[test]
    fn time_flags() {
        assert_eq!(
            render("%H|%M|%S|%f|%F|%z|%C|%D|%R|%I%p|%E"),
            "05|06|07|123456|123456789|+00:00|21|03/04/21|05:06|05AM|1614834367\n"
        );
    }

    #[test]
    fn levels_as_envoy_prints_them() {
        let got: Vec<String> = [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error]
            .iter()
            .map(|l| render_with("%l %L", *l, "x", "m"))
            .collect();
        assert_eq!(got, ["trace T\n", "debug D\n", "info I\n", "warning W\n", "error E\n"]);
    }

    #[test]
    fn logger_name_is_last_target_segment() {
        assert_eq!(render_with("%n", Level::Info, "skiff", "m"), "skiff\n");
        assert_eq!(render_with("%n", Level::Info, "a::b::main", "m"), "main\n");
        assert_eq!(render_with("%n", Level::Info, "", "m"), "skiff\n");
    }

    #[test]
    fn source_flags() {
        assert_eq!(
            render("%@ %s %g %# %!"),
            "src/http/codec.rs:42 codec.rs src/http/codec.rs 42 skiff::http::codec\n"
        );
    }

    #[test]
    fn escaped_messages() {
        let msg = "a \"b\"\nc\\d\te";
        assert_eq!(render_with("%_", Level::Info, "x", msg), "a \"b\"\\nc\\d\te\n");
        assert_eq!(
            render_with("{\"msg\":\"%j\"}", Level::Info, "x", msg),
            "{\"msg\":\"a \\\"b\\\"\\nc\\\\d\\te\"}\n"
        );
    }

    #[test]
    fn literals_and_unknown_flags() {
        assert_eq!(render("100%% %Q %v"), "100% %Q hello\n");
        assert_eq!(render("%v %"), "hello %\n");
        assert_eq!(render("%^%v%$"), "hello\n");
        assert_eq!(render("%-4Q"), "%-4Q\n");
        assert_eq!(render("ünï %v cödé"), "ünï hello cödé\n");
        assert_eq!(render("%é"), "%é\n");
    }

    #[test]
    fn padding() {
        assert_eq!(render("[%8l]"), "[    info]\n");
        assert_eq!(render("[%-8l]"), "[info    ]\n");
        assert_eq!(render("[%=8l]"), "[  info  ]\n");
        assert_eq!(render("[%3!n]"), "[ups]\n");
        assert_eq!(render("[%3n]"), "[upstream]\n");
    }

    #[test]
    fn pattern_is_parsed_into_pieces() {
        let p = Pattern::parse("[%l] %v");
        assert_eq!(
            p.pieces,
            vec![
                Piece::Literal("[".into()),
                Piece::Field(Field::Level, None),
                Piece::Literal("] ".into()),
                Piece::Field(Field::Message, None),
            ]
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        assert_eq!(
            Civil::from_unix(951_868_799),
            Civil { year: 2000, month: 2, day: 29, hour: 23, minute: 59, second: 59 }
        );
    }

    #[test]
    fn level_names() {
        assert_eq!(parse_level("trace"), Some(LevelFilter::Trace));
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("info"), Some(LevelFilter::Info));
        assert_eq!(parse_level("warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("warn"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("error"), Some(LevelFilter::Error));
        assert_eq!(parse_level("critical"), Some(LevelFilter::Error));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level("INFO"), Some(LevelFilter::Info));
        assert_eq!(parse_level("verbose"), None);
        assert_eq!(parse_level(""), None);
    }

    #[test]
    fn set_level_is_live() {
        init(LevelFilter::Info, None);
        let debug = Metadata::builder().level(Level::Debug).build();
        assert!(!LOGGER.enabled(&debug));
        set_level(LevelFilter::Debug);
        assert!(LOGGER.enabled(&debug));
        assert_eq!(log::max_level(), LevelFilter::Debug);
        assert_eq!(level(), LevelFilter::Debug);
        set_level(LevelFilter::Off);
        assert!(!LOGGER.enabled(&Metadata::builder().level(Level::Error).build()));
        assert_eq!(level(), LevelFilter::Off);
        // Exercises the real write path; it must not panic.
        log::error!("not printed");
        set_level(LevelFilter::Info);
        log::info!(target: "skiff::logging::test", "printed once by the test");
    }
}
