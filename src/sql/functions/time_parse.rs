//! Reading a date-time with a Java `DateTimeFormatter` pattern, for `time_to_epoch`.
//!
//! Supported letters: `G` (AD/BC), `u` and `y` (year; `yy` is 2000-2099), `M`/`L` (number,
//! `MMM` or `MMMM` name), `d`, `D`, `E` (day name, read and not checked), `a`, `h`, `K`,
//! `k`, `H`, `m`, `s`, `S…` (exactly that many fraction digits), `n`, `VV` (zone id),
//! `z` (zone id or a common abbreviation such as `PST`), `O`, `X`, `x`, `Z` (offsets), and
//! `[...]` optional sections. Names are read in any case. The whole text must be used.
//! Missing fields default to 1970-01-01 00:00:00 and the zone to UTC. Other letters
//! (week-based fields, quarters) make the call Undefined.

use chrono::{NaiveDate, NaiveDateTime};
use chrono_tz::Tz;

use super::time::{Token, MONTHS, WEEKDAYS};
use super::zone::{parse_offset, Zone, ABBREVIATIONS};

/// The longest zone id tried (the longest in the database has 32 bytes).
const MAX_ZONE_ID: usize = 48;

/// What the pattern has read so far.
#[derive(Clone, Debug, Default)]
struct Fields {
    year: Option<i64>,
    year_of_era: Option<i64>,
    two_digit_year: Option<i64>,
    bc: bool,
    month: Option<i64>,
    day: Option<i64>,
    day_of_year: Option<i64>,
    hour: Option<i64>,
    clock_hour: Option<i64>,
    half_day_hour: Option<i64>,
    pm: Option<bool>,
    minute: Option<i64>,
    second: Option<i64>,
    nano: Option<i64>,
    zone: Option<Zone>,
}

/// The epoch milliseconds of `input` read with `tokens`, or None when it does not match.
pub(super) fn parse(tokens: &[Token], input: &str) -> Option<i64> {
    let mut fields = Fields::default();
    let used = sequence(tokens, input, 0, &mut fields)?;
    if used != input.len() {
        return None;
    }
    resolve(&fields)
}

/// Reads the tokens from byte `pos`; the position after them.
fn sequence(tokens: &[Token], input: &str, mut pos: usize, f: &mut Fields) -> Option<usize> {
    for (i, token) in tokens.iter().enumerate() {
        pos = match token {
            Token::Text(text) => input
                .get(pos..)?
                .starts_with(text.as_str())
                .then_some(pos + text.len())?,
            Token::Optional(section) => {
                let mut attempt = f.clone();
                match sequence(section, input, pos, &mut attempt) {
                    Some(after) => {
                        *f = attempt;
                        after
                    }
                    None => pos,
                }
            }
            Token::Field(letter, n) => {
                let reserved = reserved_digits(&tokens[i + 1..]);
                field(*letter, *n, input, pos, reserved, f)?
            }
        };
    }
    Some(pos)
}

/// The (min, max) digits of a numeric field, or None for a text or zone field.
fn width(letter: char, n: usize) -> Option<(usize, usize)> {
    match (letter, n) {
        ('y' | 'u', 2) => Some((2, 2)),
        ('y' | 'u', _) => Some((n, 19)),
        ('M' | 'L', 3..) => None,
        ('M' | 'L' | 'd' | 'D' | 'h' | 'K' | 'k' | 'H' | 'm' | 's', 1) => Some((1, 19)),
        ('M' | 'L' | 'd' | 'D' | 'h' | 'K' | 'k' | 'H' | 'm' | 's', 2) => Some((2, 2)),
        ('D', 3) => Some((3, 3)),
        ('S', _) => Some((n, n)),
        ('n', _) => Some((n, 19)),
        _ => None,
    }
}

/// The digits that the numeric fields right after a variable-width one need, so that
/// `yyyyMMdd` reads `20151218` as 2015, 12, 18 (Java's adjacent value parsing).
fn reserved_digits(rest: &[Token]) -> usize {
    rest.iter()
        .map_while(|t| match t {
            Token::Field(letter, n) => width(*letter, *n).map(|(min, _)| min),
            _ => None,
        })
        .sum()
}

/// Reads a number of `min..=max` digits (fewer if `reserved` must stay for what follows).
fn digits(
    input: &str,
    pos: usize,
    min: usize,
    max: usize,
    reserved: usize,
) -> Option<(i64, usize)> {
    let available = input
        .get(pos..)?
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if min > max {
        return None; // A pattern such as `uuuuuuuuuuuuuuuuuuuuuuuu`: wider than any year.
    }
    let take = if min == max {
        min
    } else {
        available.saturating_sub(reserved).clamp(min, max)
    };
    if take > available {
        return None;
    }
    let value = input[pos..pos + take].parse::<i64>().ok()?;
    Some((value, pos + take))
}

/// Reads the first of `names` (or its 3-letter form, when `short`) found at `pos`, in any
/// case: its index and the position after it.
fn name(input: &str, pos: usize, names: &[&str], short: bool) -> Option<(usize, usize)> {
    let rest = input.get(pos..)?;
    let starts = |s: &str| {
        rest.get(..s.len())
            .is_some_and(|r| r.eq_ignore_ascii_case(s))
    };
    if let Some(i) = names.iter().position(|n| starts(n)) {
        return Some((i, pos + names[i].len()));
    }
    let i = names.iter().position(|n| short && starts(&n[..3]))?;
    Some((i, pos + 3))
}

/// A zone id at `pos`: the longest prefix (of at most [`MAX_ZONE_ID`] bytes) that names a
/// zone.
fn zone_id(input: &str, pos: usize) -> Option<(Zone, usize)> {
    let rest = input.get(pos..)?;
    let run = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || "/_+-:".contains(c)))
        .unwrap_or(rest.len())
        .min(MAX_ZONE_ID);
    (1..=run)
        .rev()
        .find_map(|len| Zone::from_id(&rest[..len]).map(|zone| (zone, pos + len)))
}

/// An offset at `pos`: `Z`, `+01:00`, `+0100`, `+01`, or `GMT`/`UTC` and an optional offset.
fn offset(input: &str, pos: usize) -> Option<(Zone, usize)> {
    let rest = input.get(pos..)?;
    let utc = Zone::Region(Tz::UTC);
    if rest.starts_with('Z') {
        return Some((utc, pos + 1));
    }
    if let Some(after) = ["GMT", "UTC"].iter().find_map(|p| rest.strip_prefix(p)) {
        return match parse_offset(after) {
            Some((seconds, used)) => Some((fixed(seconds)?, pos + 3 + used)),
            None => Some((utc, pos + 3)),
        };
    }
    let (seconds, used) = parse_offset(rest)?;
    Some((fixed(seconds)?, pos + used))
}

fn fixed(seconds: i32) -> Option<Zone> {
    chrono::FixedOffset::east_opt(seconds).map(Zone::Fixed)
}

fn field(
    letter: char,
    n: usize,
    input: &str,
    pos: usize,
    reserved: usize,
    f: &mut Fields,
) -> Option<usize> {
    if let Some((min, max)) = width(letter, n) {
        let (value, after) = digits(input, pos, min, max, reserved)?;
        let slot = match letter {
            'y' if n == 2 => &mut f.two_digit_year,
            'u' if n == 2 => &mut f.two_digit_year,
            'y' => &mut f.year_of_era,
            'u' => &mut f.year,
            'M' | 'L' => &mut f.month,
            'd' => &mut f.day,
            'D' => &mut f.day_of_year,
            'H' => &mut f.hour,
            'k' => &mut f.clock_hour,
            'h' => {
                f.half_day_hour = Some(value % 12);
                return (1..=12).contains(&value).then_some(after);
            }
            'K' => &mut f.half_day_hour,
            'm' => &mut f.minute,
            's' => &mut f.second,
            'S' => {
                f.nano = Some(value * 10i64.pow(9u32.saturating_sub(n as u32)));
                return (n <= 9).then_some(after);
            }
            _ => &mut f.nano,
        };
        *slot = Some(value);
        return Some(after);
    }
    let (zone, after) = match letter {
        'M' | 'L' => {
            let (i, after) = name(input, pos, &MONTHS, true)?;
            f.month = Some(i as i64 + 1);
            return Some(after);
        }
        'E' => return name(input, pos, &WEEKDAYS, true).map(|(_, after)| after),
        'a' => {
            let (i, after) = name(input, pos, &["AM", "PM"], false)?;
            f.pm = Some(i == 1);
            return Some(after);
        }
        'G' => {
            let eras = ["Anno Domini", "Before Christ", "AD", "BC"];
            let (i, after) = name(input, pos, &eras, false)?;
            f.bc = i % 2 == 1;
            return Some(after);
        }
        'V' if n == 2 => zone_id(input, pos)?,
        'z' => zone_id(input, pos).or_else(|| {
            let rest = input.get(pos..)?;
            let (abbr, region) = ABBREVIATIONS.iter().find(|(a, _)| rest.starts_with(a))?;
            Some((Zone::from_id(region)?, pos + abbr.len()))
        })?,
        'O' | 'X' | 'x' | 'Z' => offset(input, pos)?,
        _ => return None,
    };
    f.zone = Some(zone);
    Some(after)
}

fn resolve(f: &Fields) -> Option<i64> {
    let year = match (f.year, f.year_of_era, f.two_digit_year) {
        (Some(y), _, _) => y,
        (None, Some(y), _) if f.bc => 1 - y,
        (None, Some(y), _) => y,
        (None, None, Some(yy)) => 2000 + yy,
        (None, None, None) => 1970,
    };
    let year = i32::try_from(year).ok()?;
    let date = match (f.month, f.day, f.day_of_year) {
        (None, None, Some(ordinal)) => NaiveDate::from_yo_opt(year, u32::try_from(ordinal).ok()?)?,
        (month, day, _) => NaiveDate::from_ymd_opt(
            year,
            u32::try_from(month.unwrap_or(1)).ok()?,
            u32::try_from(day.unwrap_or(1)).ok()?,
        )?,
    };
    let hour = match (f.hour, f.clock_hour, f.half_day_hour) {
        (Some(h), _, _) => h,
        (None, Some(k), _) if (1..=24).contains(&k) => k % 24,
        (None, Some(_), _) => return None,
        (None, None, Some(h)) => h + if f.pm == Some(true) { 12 } else { 0 },
        (None, None, None) => 0,
    };
    let small = |v: Option<i64>| u32::try_from(v.unwrap_or(0)).ok();
    let time = chrono::NaiveTime::from_hms_nano_opt(
        small(Some(hour))?,
        small(f.minute)?,
        small(f.second)?,
        small(f.nano)?,
    )?;
    let local = NaiveDateTime::new(date, time);
    let zone = f.zone.unwrap_or(Zone::Region(Tz::UTC));
    Some(zone.to_utc(&local)?.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::check;

    #[test]
    fn time_to_epoch_reads_java_patterns() {
        check(&[
            (
                "time_to_epoch",
                &[
                    "\"2020-04-03 09:45:18 UTC+01:00\"",
                    "\"yyyy-MM-dd HH:mm:ss VV\"",
                ],
                "1585903518000",
            ),
            (
                "time_to_epoch",
                &["\"18 December 2015\"", "\"dd MMMM yyyy\""],
                "1450396800000",
            ),
            (
                "time_to_epoch",
                &[
                    "\"2007-12-03 10:15:30.592 America/Los_Angeles\"",
                    "\"yyyy-MM-dd HH:mm:ss.SSS z\"",
                ],
                "1196705730592",
            ),
            (
                "time_to_epoch",
                &["\"20151218\"", "\"yyyyMMdd\""],
                "1450396800000",
            ),
            (
                "time_to_epoch",
                &["\"18 Dec 15 3:04 pm\"", "\"dd MMM yy h:mm a\""],
                "1450451040000",
            ),
            (
                "time_to_epoch",
                &["\"2015-12-18T10:00:00Z\"", "\"yyyy-MM-dd'T'HH:mm:ssX\""],
                "1450432800000",
            ),
            (
                "time_to_epoch",
                &["\"2015-12-18T10:00:00+0100\"", "\"yyyy-MM-dd'T'HH:mm:ssZ\""],
                "1450429200000",
            ),
            (
                "time_to_epoch",
                &["\"2015-12-18 10:00\"", "\"yyyy-MM-dd HH:mm[:ss]\""],
                "1450432800000",
            ),
            (
                "time_to_epoch",
                &["\"2015-12-18 10:00:30\"", "\"yyyy-MM-dd HH:mm[:ss]\""],
                "1450432830000",
            ),
            (
                "time_to_epoch",
                &[
                    "\"Fri, 18 Dec 2015 10:00:00 PST\"",
                    "\"EEE, dd MMM yyyy HH:mm:ss z\"",
                ],
                "1450461600000",
            ),
            (
                "time_to_epoch",
                &["\"2015-12-18 x\"", "\"yyyy-MM-dd\""],
                "undefined",
            ),
            (
                "time_to_epoch",
                &["\"2015-13-18\"", "\"yyyy-MM-dd\""],
                "undefined",
            ),
            (
                "time_to_epoch",
                &["\"2015-12-18\"", "\"YYYY-ww\""],
                "undefined",
            ),
            (
                "time_to_epoch",
                &["\"2015-12-18\"", "\"yyyy-MM-dd[\""],
                "1450396800000",
            ),
            (
                "time_to_epoch",
                &["\"99999999999999999999\"", "\"yyyy\""],
                "undefined",
            ),
            ("time_to_epoch", &["null", "\"yyyy\""], "undefined"),
        ]);
    }
}
