//! Time zones for `parse_time` and `time_to_epoch`: the regions of the IANA database
//! (chrono-tz) and fixed offsets, with the ids Joda-Time and Java accept for them.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::{OffsetName, Tz};

/// A time zone: a region of the IANA database, or a fixed offset.
#[derive(Clone, Copy, Debug)]
pub(super) enum Zone {
    Region(Tz),
    Fixed(FixedOffset),
}

impl Zone {
    /// A zone from its id: `UTC`, `America/Belize`, `+01:00`, `UTC+01:00`, `GMT-8`, `Z`.
    pub(super) fn from_id(id: &str) -> Option<Zone> {
        if let Ok(tz) = Tz::from_str(id) {
            return Some(Zone::Region(tz));
        }
        if id == "Z" {
            return Some(Zone::Region(Tz::UTC));
        }
        let rest = ["UTC", "GMT", "UT"]
            .iter()
            .find_map(|prefix| id.strip_prefix(prefix))
            .unwrap_or(id);
        match parse_offset(rest)? {
            (seconds, used) if used == rest.len() => {
                FixedOffset::east_opt(seconds).map(Zone::Fixed)
            }
            _ => None,
        }
    }

    pub(super) fn offset_at(&self, utc: &NaiveDateTime) -> i32 {
        match self {
            Zone::Region(tz) => tz.offset_from_utc_datetime(utc).fix().local_minus_utc(),
            Zone::Fixed(fixed) => fixed.local_minus_utc(),
        }
    }

    /// The id, as Joda's `ZZZ` writes it.
    pub(super) fn id(&self) -> String {
        match self {
            Zone::Region(tz) => tz.name().to_owned(),
            Zone::Fixed(fixed) => offset_text(fixed.local_minus_utc(), true),
        }
    }

    /// The short name at an instant, as Joda's `z` writes it: `CST`, `UTC`, `+01:00`.
    pub(super) fn short_name(&self, utc: &NaiveDateTime) -> String {
        match self {
            Zone::Region(tz) => match tz.offset_from_utc_datetime(utc).abbreviation() {
                Some(name) => name.to_owned(),
                None => offset_text(self.offset_at(utc), true),
            },
            Zone::Fixed(_) => self.id(),
        }
    }

    /// The instant of a local date-time in this zone. In an overlap the earlier offset is
    /// used, and a time in a gap is moved forward by the length of the gap (as Java does).
    pub(super) fn to_utc(self, local: &NaiveDateTime) -> Option<DateTime<Utc>> {
        let tz = match self {
            Zone::Fixed(fixed) => return Some(fixed.from_local_datetime(local).single()?.to_utc()),
            Zone::Region(tz) => tz,
        };
        if let Some(instant) = tz.from_local_datetime(local).earliest() {
            return Some(instant.to_utc());
        }
        let before = *local - chrono::Duration::hours(6);
        let offset = tz.from_local_datetime(&before).earliest()?.offset().fix();
        Some((*local - chrono::Duration::seconds(offset.local_minus_utc().into())).and_utc())
    }
}

/// Reads `+hh`, `+hhmm`, `+hh:mm`, `+hh:mm:ss` (or `-`; one-digit hours too): the offset in
/// seconds and the bytes used.
pub(super) fn parse_offset(s: &str) -> Option<(i32, usize)> {
    let b = s.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |at: usize, max: usize| {
        let n = b[at.min(b.len())..]
            .iter()
            .take(max)
            .take_while(|c| c.is_ascii_digit())
            .count();
        let value = s.get(at..at + n)?.parse::<i32>().ok()?;
        Some((value, n))
    };
    let (hours, n) = digits(1, 2).filter(|(_, n)| *n > 0)?;
    let mut at = 1 + n;
    let mut seconds = hours * 3600;
    for unit in [60, 1] {
        let colon = usize::from(b.get(at) == Some(&b':'));
        match digits(at + colon, 2) {
            Some((value, 2)) if value < 60 => {
                seconds += value * unit;
                at += colon + 2;
            }
            _ => break,
        }
    }
    (hours <= 18).then_some((sign * seconds, at))
}

/// `+0100` or (`colon`) `+01:00`.
pub(super) fn offset_text(seconds: i32, colon: bool) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.abs() / 60;
    let separator = if colon { ":" } else { "" };
    format!("{sign}{:02}{separator}{:02}", minutes / 60, minutes % 60)
}

/// Time-zone abbreviations that `z` reads, and the region each stands for (as Java maps
/// them; the region then decides standard or summer time).
pub(super) const ABBREVIATIONS: &[(&str, &str)] = &[
    ("UTC", "UTC"),
    ("GMT", "GMT"),
    ("UT", "UTC"),
    ("Z", "UTC"),
    ("EST", "America/New_York"),
    ("EDT", "America/New_York"),
    ("CST", "America/Chicago"),
    ("CDT", "America/Chicago"),
    ("MST", "America/Denver"),
    ("MDT", "America/Denver"),
    ("PST", "America/Los_Angeles"),
    ("PDT", "America/Los_Angeles"),
    ("AKST", "America/Anchorage"),
    ("AKDT", "America/Anchorage"),
    ("HST", "Pacific/Honolulu"),
    ("WET", "Europe/Lisbon"),
    ("WEST", "Europe/Lisbon"),
    ("CET", "Europe/Paris"),
    ("CEST", "Europe/Paris"),
    ("EET", "Europe/Athens"),
    ("EEST", "Europe/Athens"),
    ("BST", "Europe/London"),
    ("IST", "Asia/Kolkata"),
    ("JST", "Asia/Tokyo"),
    ("KST", "Asia/Seoul"),
    ("AEST", "Australia/Sydney"),
    ("AEDT", "Australia/Sydney"),
];
