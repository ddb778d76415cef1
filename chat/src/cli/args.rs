//! What the user types, parsed once into types: ids with their documented formats, the names
//! that stand for a discussion or a message, objects, times and levels. A malformed argument
//! is refused by the argument parser, before anything connects.

use std::fmt;
use std::str::FromStr;

use veche_client::protocol::Timestamp;
use veche_client::protocol::discussions::ObjectRef;
use veche_client::protocol::ids::{DiscussionId, FileId, Login, MessageId, UserId};
use veche_client::protocol::presence::{NotificationLevel, PresenceChoice};

/// A discussion as the user names it: its id, or a name resolved against their list (a title,
/// or the other member of a dialog); a name shaped `APP/TYPE/ID` that no discussion of the list
/// carries is a business object's discussion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscussionArg {
    /// `<32 hex digits>@node`.
    Id(DiscussionId),
    /// A title, a user, or an object.
    Name {
        /// As typed.
        name: String,
        /// The object it names, if it has that shape.
        object: Option<ObjectRef>,
    },
}

impl FromStr for DiscussionArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("name a discussion: its id, title, or the other user of a dialog".into());
        }
        if let Ok(id) = s.parse() {
            return Ok(Self::Id(id));
        }
        Ok(Self::Name {
            name: s.to_owned(),
            object: s.parse::<ObjectArg>().ok().map(|o| o.0),
        })
    }
}

impl fmt::Display for DiscussionArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Name { name, .. } => f.write_str(name),
        }
    }
}

/// A business object, `APP/TYPE/ID` (`erp/invoice/INV-2026-00042`); the id may hold further
/// slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectArg(pub ObjectRef);

impl FromStr for ObjectArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, '/');
        let (Some(app), Some(kind), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("an object is APP/TYPE/ID, such as erp/invoice/INV-42".into());
        };
        if [app, kind, id].iter().any(|p| p.trim().is_empty()) {
            return Err("an object is APP/TYPE/ID with none of them empty".into());
        }
        if s.chars().any(char::is_control) {
            return Err("an object holds no control characters".into());
        }
        Ok(Self(ObjectRef {
            application: app.to_owned(),
            object_type: kind.to_owned(),
            object_id: id.to_owned(),
        }))
    }
}

impl fmt::Display for ObjectArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.0;
        write!(f, "{}/{}/{}", o.application, o.object_type, o.object_id)
    }
}

/// A message: its id, or its sequence number in the discussion as `history` shows it (`#7`
/// or `7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageArg {
    /// `<32 hex digits>@node`.
    Id(MessageId),
    /// The `seq` at which it was posted.
    Seq(u64),
}

impl FromStr for MessageArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix('#').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return match digits.parse::<u64>() {
                Ok(seq) if seq > 0 => Ok(Self::Seq(seq)),
                _ => Err(format!("{s} is not a sequence number")),
            };
        }
        s.parse().map(Self::Id).map_err(|_| {
            "a message is its number in the discussion as `veche history` shows it (#7), \
             or its id (<32 hex digits>@node)"
                .to_owned()
        })
    }
}

impl fmt::Display for MessageArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Seq(seq) => write!(f, "#{seq}"),
        }
    }
}

/// A user: a login of this node, or `login@node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserArg(String);

impl UserArg {
    /// As the node takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.strip_prefix('@').unwrap_or(s);
        if s.contains('@') {
            s.parse::<UserId>().map_err(|e| e.to_string())?;
        } else {
            s.parse::<Login>().map_err(|e| e.to_string())?;
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for UserArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session id, as `veche sessions` lists them: a UUID in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionArg(String);

impl SessionArg {
    /// As the node takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let groups: Vec<&str> = s.split('-').collect();
        let shaped = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        if shaped {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err("a session id is a UUID, as `veche sessions` lists them".into())
        }
    }
}

/// A file id, `f_<32 hex digits>`.
pub type FileArg = FileId;

/// A button's id, as the message's author chose it: 1–64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionArg(pub String);

impl FromStr for ActionArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
            return Err("a button id is 1 to 64 characters".into());
        }
        Ok(Self(s.to_owned()))
    }
}

/// A point in time: a day `YYYY-MM-DD` (its start, UTC), a time `YYYY-MM-DDTHH:MM` (UTC), or
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeArg(pub Timestamp);

impl FromStr for TimeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a time: give YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC) or epoch milliseconds"
            )
        };
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(|ms| Self(Timestamp(ms))).map_err(|_| bad());
        }
        let (date, time) = match s.trim_end_matches('Z').split_once(['T', ' ']) {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let mut ymd = date.splitn(3, '-').map(str::parse::<i64>);
        let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (ymd.next(), ymd.next(), ymd.next()) else {
            return Err(bad());
        };
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(bad());
        }
        let (hh, mm) = match time {
            None => (0, 0),
            Some(t) => {
                let mut hm = t.splitn(2, ':').map(str::parse::<i64>);
                match (hm.next(), hm.next()) {
                    (Some(Ok(h)), Some(Ok(m))) if (0..24).contains(&h) && (0..60).contains(&m) => {
                        (h, m)
                    }
                    _ => return Err(bad()),
                }
            }
        };
        let days = days_from_civil(y, m, d);
        Ok(Self(Timestamp(((days * 24 + hh) * 60 + mm) * 60_000)))
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What others see of the user: `available` (from the devices' activity), `away`, `dnd`
/// or `invisible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusArg(pub PresenceChoice);

impl FromStr for StatusArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "available" | "auto" => Ok(Self(PresenceChoice::Auto)),
            other => PresenceChoice::parse(other)
                .map(Self)
                .ok_or_else(|| "the status is available, away, dnd or invisible".into()),
        }
    }
}

/// Which messages of a discussion notify: `default`, `all`, `mentions` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelArg(pub NotificationLevel);

impl FromStr for LevelArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NotificationLevel::parse(s)
            .map(Self)
            .ok_or_else(|| "the level is default, all, mentions or none".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0190f1a2b3c4d5e6f708192a3b4c5d6e";

    #[test]
    fn a_discussion_is_an_id_or_a_name_and_a_name_may_be_an_object() {
        let id: DiscussionArg = format!("{HEX}@hq").parse().expect("id");
        assert!(matches!(id, DiscussionArg::Id(_)));
        let DiscussionArg::Name { name, object } = "petrov".parse().expect("name") else {
            panic!("a name")
        };
        assert_eq!((name.as_str(), object), ("petrov", None));
        let DiscussionArg::Name { object, .. } = "erp/invoice/INV/42".parse().expect("object")
        else {
            panic!("a name")
        };
        let object = object.expect("an object");
        assert_eq!(object.object_id, "INV/42");
        assert!("".parse::<DiscussionArg>().is_err());
    }

    #[test]
    fn a_message_is_a_sequence_number_or_an_id() {
        assert_eq!("#7".parse::<MessageArg>(), Ok(MessageArg::Seq(7)));
        assert_eq!("12".parse::<MessageArg>(), Ok(MessageArg::Seq(12)));
        assert!("#0".parse::<MessageArg>().is_err());
        assert!(matches!(
            format!("{HEX}@hq").parse::<MessageArg>(),
            Ok(MessageArg::Id(_))
        ));
        assert!("#x".parse::<MessageArg>().is_err());
        assert!(
            format!("{}@hq", HEX.to_uppercase())
                .parse::<MessageArg>()
                .is_err()
        );
    }

    #[test]
    fn objects_users_sessions_and_buttons_are_checked() {
        assert!("erp/invoice".parse::<ObjectArg>().is_err());
        assert!("erp//x".parse::<ObjectArg>().is_err());
        assert!("erp/invoice/x\u{1b}".parse::<ObjectArg>().is_err());
        assert_eq!(
            "@petrov".parse::<UserArg>().map(|u| u.0),
            Ok("petrov".to_owned())
        );
        assert!("petrov@hq.example".parse::<UserArg>().is_ok());
        assert!("Петров".parse::<UserArg>().is_err());
        assert!("a@b@c".parse::<UserArg>().is_err());
        assert!(
            "0190f1a2-b3c4-7d5e-8f70-8192a3b4c5d6"
                .parse::<SessionArg>()
                .is_ok()
        );
        assert!("0190f1a2b3c4".parse::<SessionArg>().is_err());
        assert!("".parse::<ActionArg>().is_err());
        assert!("approve".parse::<ActionArg>().is_ok());
    }

    #[test]
    fn times_are_days_minutes_or_milliseconds_utc() {
        assert_eq!(
            "1970-01-02".parse::<TimeArg>(),
            Ok(TimeArg(Timestamp(86_400_000)))
        );
        assert_eq!(
            "2026-11-18T11:06"
                .parse::<TimeArg>()
                .map(|t| t.0.to_string()),
            Ok("2026-11-18T11:06:00.000Z".to_owned())
        );
        assert_eq!(
            "2000-02-29".parse::<TimeArg>().map(|t| t.0.0),
            Ok(951_782_400_000)
        );
        assert_eq!("5".parse::<TimeArg>(), Ok(TimeArg(Timestamp(5))));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "yesterday",
            "2026-01-01T25:00",
            "",
        ] {
            assert!(bad.parse::<TimeArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_and_levels() {
        assert_eq!(
            "available".parse::<StatusArg>(),
            Ok(StatusArg(PresenceChoice::Auto))
        );
        assert_eq!(
            "dnd".parse::<StatusArg>(),
            Ok(StatusArg(PresenceChoice::Dnd))
        );
        assert!("busy".parse::<StatusArg>().is_err());
        assert!("mentions".parse::<LevelArg>().is_ok());
        assert!("loud".parse::<LevelArg>().is_err());
    }
}
