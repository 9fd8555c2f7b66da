//! `parse_time(pattern, epochMillis[, zone])` formats an instant with a Joda-Time pattern;
//! `time_to_epoch(text, pattern)` reads one with a Java `DateTimeFormatter` pattern (in
//! `time_parse`). Both patterns are tokenized here; both use the zones of `zone`.
//!
//! Supported Joda letters (English names): `G C Y y x w e E D M d a h H k K m s S z Z`, with
//! `'text'` and `''` for literal text; any other letter makes the call Undefined, as Joda
//! rejects it. Joda's long zone names (`zzzz`, "Central Standard Time") are not known
//! here: the zone id is written instead.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

use super::super::eval::Env;
use super::super::value::{Conv, Value};
use super::zone::{offset_text, Zone};
use super::{string, text, time_parse};

pub(super) const MONTHS: [&str; 12] = [
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

pub(super) const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// The longest run of one pattern letter accepted (`yyyy…` pads to that many digits).
const MAX_LETTERS: usize = 32;

/// A piece of a date-time pattern.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    /// A letter and how many times it is repeated: `yyyy` is `Field('y', 4)`.
    Field(char, usize),
    Text(String),
    /// `[...]`, an optional section (Java patterns only).
    Optional(Vec<Token>),
}

/// Splits a pattern into tokens; None when it is malformed (an unterminated quote, a
/// reserved character of Java's). `java` enables Java's optional sections.
pub(super) fn tokenize(pattern: &str, java: bool) -> Option<Vec<Token>> {
    let mut stack: Vec<Vec<Token>> = vec![Vec::new()];
    let mut chars = pattern.chars().peekable();
    let push_text = |tokens: &mut Vec<Token>, s: &str| match tokens.last_mut() {
        Some(Token::Text(t)) => t.push_str(s),
        _ => tokens.push(Token::Text(s.to_owned())),
    };
    while let Some(c) = chars.next() {
        let tokens = stack.last_mut().expect("the stack is never empty");
        match c {
            'a'..='z' | 'A'..='Z' => {
                let mut n = 1;
                while chars.next_if_eq(&c).is_some() {
                    n += 1;
                }
                if n > MAX_LETTERS {
                    return None;
                }
                tokens.push(Token::Field(c, n));
            }
            '\'' => {
                if chars.next_if_eq(&'\'').is_some() {
                    push_text(tokens, "'");
                    continue;
                }
                let mut literal = String::new();
                loop {
                    match chars.next()? {
                        '\'' if chars.next_if_eq(&'\'').is_some() => literal.push('\''),
                        '\'' => break,
                        c => literal.push(c),
                    }
                }
                push_text(tokens, &literal);
            }
            '[' if java => stack.push(Vec::new()),
            ']' if java => {
                if stack.len() == 1 {
                    return None;
                }
                let section = stack.pop().expect("checked above");
                stack.last_mut()?.push(Token::Optional(section));
            }
            '#' | '{' | '}' if java => return None,
            c => push_text(tokens, c.encode_utf8(&mut [0; 4])),
        }
    }
    // Java closes the optional sections left open at the end.
    while stack.len() > 1 {
        let section = stack.pop()?;
        stack.last_mut()?.push(Token::Optional(section));
    }
    stack.pop()
}

/// `n` zero-padded to `width` digits, after its sign.
fn pad(out: &mut String, n: i64, width: usize) {
    if n < 0 {
        out.push('-');
    }
    out.push_str(&format!("{:0width$}", n.unsigned_abs()));
}

/// Writes an instant in a zone with a Joda pattern; None for a letter Joda does not know.
fn format_joda(tokens: &[Token], utc: &DateTime<Utc>, zone: &Zone) -> Option<String> {
    let instant = utc.naive_utc();
    let offset = zone.offset_at(&instant);
    let t = instant + chrono::Duration::seconds(offset.into());
    let year = i64::from(t.year());
    let year_of_era = if year > 0 { year } else { 1 - year };
    let mut out = String::new();
    for token in tokens {
        let (letter, n) = match token {
            Token::Field(letter, n) => (*letter, *n),
            Token::Text(text) => {
                out.push_str(text);
                continue;
            }
            Token::Optional(_) => return None,
        };
        let number = |out: &mut String, value: i64| pad(out, value, n);
        let year_field = |out: &mut String, value: i64| match n {
            2 => pad(out, value.rem_euclid(100), 2),
            _ => pad(out, value, n),
        };
        let hour = i64::from(t.hour());
        match letter {
            'G' => out.push_str(if year > 0 { "AD" } else { "BC" }),
            'C' => number(&mut out, year_of_era / 100),
            'Y' => year_field(&mut out, year_of_era),
            'y' => year_field(&mut out, year),
            'x' => year_field(&mut out, t.iso_week().year().into()),
            'w' => number(&mut out, t.iso_week().week().into()),
            'e' => number(&mut out, t.weekday().number_from_monday().into()),
            'E' => {
                let name = WEEKDAYS[t.weekday().num_days_from_monday() as usize];
                out.push_str(if n >= 4 { name } else { &name[..3] });
            }
            'D' => number(&mut out, t.ordinal().into()),
            'M' if n >= 3 => {
                let name = MONTHS[t.month0() as usize];
                out.push_str(if n >= 4 { name } else { &name[..3] });
            }
            'M' => number(&mut out, t.month().into()),
            'd' => number(&mut out, t.day().into()),
            'a' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'h' => number(&mut out, (hour + 11) % 12 + 1),
            'K' => number(&mut out, hour % 12),
            'H' => number(&mut out, hour),
            'k' => number(&mut out, if hour == 0 { 24 } else { hour }),
            'm' => number(&mut out, t.minute().into()),
            's' => number(&mut out, t.second().into()),
            'S' => {
                // Joda keeps milliseconds: the fraction is cut or padded to n digits.
                let millis = format!("{:03}", t.nanosecond() / 1_000_000 % 1000);
                let mut fraction: String = millis.chars().take(n).collect();
                fraction.extend(std::iter::repeat_n('0', n.saturating_sub(3)));
                out.push_str(&fraction);
            }
            'z' if n >= 4 => out.push_str(&zone.id()),
            'z' => out.push_str(&zone.short_name(&instant)),
            'Z' if n >= 3 => out.push_str(&zone.id()),
            'Z' => out.push_str(&offset_text(offset, n == 2)),
            _ => return None,
        }
    }
    Some(out)
}

/// `parse_time(pattern, epochMillis[, zone])`: the instant written with the Joda-Time
/// pattern in the zone (UTC by default; an IANA id such as `America/Belize`, or an offset
/// such as `+01:00`). The milliseconds are converted to Int (rounded down). An unknown zone,
/// a pattern Joda would reject or an instant beyond chrono's range give Undefined.
pub fn parse_time(env: &Env, args: Vec<Value>) -> Value {
    let mut args = args.into_iter();
    let (Some(pattern), Some(millis)) = (args.next(), args.next()) else {
        return Value::Undefined;
    };
    let zone = match args.next() {
        None => Some(Zone::Region(Tz::UTC)),
        Some(zone) => text(env, &zone).and_then(|id| Zone::from_id(&id)),
    };
    let (Some(pattern), Conv::Ok(millis), Some(zone)) =
        (text(env, &pattern), millis.to_i64(), zone)
    else {
        return Value::Undefined;
    };
    let formatted = tokenize(&pattern, false).and_then(|tokens| {
        let instant = DateTime::from_timestamp_millis(millis)?;
        format_joda(&tokens, &instant, &zone)
    });
    formatted.map_or(Value::Undefined, string)
}

/// `time_to_epoch(text, pattern)`: the epoch milliseconds of a date-time read with a Java
/// `DateTimeFormatter` pattern, in UTC unless the text names a zone or an offset. See
/// `time_parse` for what is read.
pub fn time_to_epoch(env: &Env, args: Vec<Value>) -> Value {
    let mut args = args.into_iter();
    let (Some(input), Some(pattern)) = (args.next(), args.next()) else {
        return Value::Undefined;
    };
    let (Some(input), Some(pattern)) = (text(env, &input), text(env, &pattern)) else {
        return Value::Undefined;
    };
    tokenize(&pattern, true)
        .and_then(|tokens| time_parse::parse(&tokens, &input))
        .map_or(Value::Undefined, |ms| Value::Int(ms.into()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::check;
    use super::super::zone::parse_offset;
    use super::*;

    #[test]
    fn tokens() {
        use Token::*;
        assert_eq!(
            tokenize("yyyy.MM 'at' ''x''", false).unwrap(),
            vec![
                Field('y', 4),
                Text(".".into()),
                Field('M', 2),
                Text(" at '".into()),
                Field('x', 1),
                Text("'".into()),
            ]
        );
        assert_eq!(
            tokenize("HH[:mm]", true).unwrap(),
            vec![
                Field('H', 2),
                Optional(vec![Text(":".into()), Field('m', 2)])
            ]
        );
        assert!(tokenize("'open", false).is_none());
        assert!(tokenize("a]", true).is_none());
        assert!(tokenize("{", true).is_none());
        assert_eq!(parse_offset("+01:00"), Some((3600, 6)));
        assert_eq!(parse_offset("-0830x"), Some((-30600, 5)));
        assert_eq!(parse_offset("+5"), Some((18000, 2)));
        assert_eq!(parse_offset("+19"), None);
    }

    #[test]
    fn parse_time_formats_with_joda_patterns() {
        let p = "\"yyyy.MM.dd G 'at' HH:mm:ss z\"";
        check(&[
            (
                "parse_time",
                &[p, "100000000", "\"America/Belize\""],
                "\"1970.01.01 AD at 21:46:40 CST\"",
            ),
            (
                "parse_time",
                &[p, "1497028786000"],
                "\"2017.06.09 AD at 17:19:46 UTC\"",
            ),
            (
                "parse_time",
                &["\"yyyy\"", "1481825251155", "\"UTC\""],
                "\"2016\"",
            ),
            (
                "parse_time",
                &["\"yy-M-d h:m a E EEEE MMM MMMM\"", "1481825251155"],
                "\"16-12-15 6:7 PM Thu Thursday Dec December\"",
            ),
            (
                "parse_time",
                &["\"HH:mm:ss.SSS Z ZZ ZZZ\"", "1481825251155", "\"+05:30\""],
                "\"23:37:31.155 +0530 +05:30 +05:30\"",
            ),
            (
                "parse_time",
                &[
                    "\"ZZZ zzzz D k K S SSSS\"",
                    "1481825251155",
                    "\"Europe/Paris\"",
                ],
                "\"Europe/Paris Europe/Paris 350 19 7 1 1550\"",
            ),
            (
                "parse_time",
                &["\"yyyy\"", "1481825251155", "\"Nowhere/City\""],
                "undefined",
            ),
            ("parse_time", &["\"yyyy q\"", "0"], "undefined"),
            (
                "parse_time",
                &["\"yyyy\"", "9223372036854775807"],
                "undefined",
            ),
            ("parse_time", &["\"yyyy\"", "\"x\""], "undefined"),
            (
                "parse_time",
                &["\"yyyy G\"", "-62167219200000"],
                "\"0000 BC\"",
            ),
        ]);
    }
}
