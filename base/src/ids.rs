//! Identifiers that cross the wire, with their documented formats.
//!
//! On the wire every id is a plain string; receivers parse it once into these newtypes.

use std::fmt;
use std::str::FromStr;

/// Why an identifier did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// A login is 1–64 characters of `a-z 0-9 . _ -`, starting with a letter or digit.
    #[error(
        "a login is 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    )]
    Login,
    /// A node name is a DNS-like name: 1–253 characters of `a-z 0-9 . -`.
    #[error(
        "a node name is 1 to 253 characters of a-z, 0-9, '.' or '-', starting with a letter or digit"
    )]
    NodeName,
    /// A user id is `login@node-name`.
    #[error("a user id has the form login@node-name")]
    UserId,
    /// A device id is 1–64 characters of `A-Z a-z 0-9 . _ -`.
    #[error("a device id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
    DeviceId,
    /// A discussion id is 32 lowercase hex digits, `@`, and the name of its home node.
    #[error("a discussion id has the form <32 hex digits>@node-name")]
    DiscussionId,
    /// A message id is 32 lowercase hex digits, `@`, and the name of the node that made it.
    #[error("a message id has the form <32 hex digits>@node-name")]
    MessageId,
    /// A file id is `f_` and 32 lowercase hex digits.
    #[error("a file id has the form f_<32 hex digits>")]
    FileId,
    /// A link id is 32 lowercase hex digits.
    #[error("a link id is 32 lowercase hex digits")]
    LinkId,
    /// A digest is 64 lowercase hex digits.
    #[error("a digest is 64 lowercase hex digits")]
    Hash,
}

fn well_formed(s: &str, max: usize, extra: &[u8], upper: bool) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && (upper || !bytes[0].is_ascii_uppercase())
        && bytes.iter().all(|b| {
            b.is_ascii_digit()
                || b.is_ascii_lowercase()
                || (upper && b.is_ascii_uppercase())
                || extra.contains(b)
        })
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $check:expr, $err:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> bool = $check;
                if check(s) { Ok(Self(s.to_owned())) } else { Err($err) }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A user's login on their home node: `ivanov`, `a.petrova`. Lowercase ASCII only, so
    /// that Cyrillic look-alikes cannot impersonate a Latin login.
    Login,
    |s| well_formed(s, 64, b"._-", false),
    IdError::Login
);

string_id!(
    /// The name of a node, fixed at its first start: `hq.example.ru`.
    NodeName,
    |s| well_formed(s, 253, b".-", false) && !s.ends_with('.') && !s.contains(".."),
    IdError::NodeName
);

string_id!(
    /// A client device, chosen by the client (typically a UUID) and kept across restarts.
    DeviceId,
    |s| well_formed(s, 64, b"._-", true),
    IdError::DeviceId
);

/// `s` is `n` lowercase hex digits.
fn lower_hex(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `s` is 32 lowercase hex digits, `@`, and a node name.
fn hex_at_node(s: &str) -> bool {
    s.split_once('@')
        .is_some_and(|(id, node)| lower_hex(id, 32) && node.parse::<NodeName>().is_ok())
}

string_id!(
    /// A discussion: `<32 hex digits>@<home node>`, made by its home node (a UUIDv7, so ids
    /// sort roughly by creation).
    DiscussionId,
    hex_at_node,
    IdError::DiscussionId
);

string_id!(
    /// A message: `<32 hex digits>@<node>`, made by the node that sequenced it.
    MessageId,
    hex_at_node,
    IdError::MessageId
);

string_id!(
    /// A stored file: `f_<32 hex digits>`.
    FileId,
    |s| s.strip_prefix("f_").is_some_and(|h| lower_hex(h, 32)),
    IdError::FileId
);

string_id!(
    /// A link between two nodes: 32 hex digits, chosen by the node that offered it.
    LinkId,
    |s| lower_hex(s, 32),
    IdError::LinkId
);

impl DiscussionId {
    /// The node the discussion lives on.
    pub fn home(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, node)| node)
    }
}

/// A globally unique user id: `login@node-name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId {
    login: Login,
    node: NodeName,
}

impl UserId {
    /// The user `login` on `node`.
    pub fn new(login: Login, node: NodeName) -> Self {
        Self { login, node }
    }
    /// The login part.
    pub fn login(&self) -> &Login {
        &self.login
    }
    /// The home node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }
}

impl FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (login, node) = s.split_once('@').ok_or(IdError::UserId)?;
        Ok(Self {
            login: login.parse().map_err(|_| IdError::UserId)?,
            node: node.parse().map_err(|_| IdError::UserId)?,
        })
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.login, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        for ok in ["ivanov", "a.petrova", "user_1", "0day", "x"] {
            assert!(ok.parse::<Login>().is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Ivanov",
            "иванов",
            "ivаnov", /* Cyrillic а */
            ".x",
            "a b",
            "a@b",
            &long,
        ] {
            assert_eq!(bad.parse::<Login>(), Err(IdError::Login), "{bad}");
        }
    }

    #[test]
    fn user_ids() {
        let id: UserId = "ivanov@hq.example.ru".parse().unwrap();
        assert_eq!(id.login().as_str(), "ivanov");
        assert_eq!(id.node().as_str(), "hq.example.ru");
        assert_eq!(id.to_string(), "ivanov@hq.example.ru");
        for bad in [
            "ivanov",
            "@hq",
            "ivanov@",
            "a@b@c",
            "ivanov@hq..ru",
            "ivanov@hq.",
        ] {
            assert!(bad.parse::<UserId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn discussion_message_file_and_link_ids() {
        let hex = "0190f1a2b3c4d5e6f708192a3b4c5d6e";
        let d: DiscussionId = format!("{hex}@hq.example.ru").parse().unwrap();
        assert_eq!(d.home(), "hq.example.ru");
        assert!(format!("{hex}@hq").parse::<MessageId>().is_ok());
        assert!(format!("f_{hex}").parse::<FileId>().is_ok());
        assert!(hex.parse::<LinkId>().is_ok());
        for bad in [
            hex.to_owned(),
            format!("{hex}@"),
            format!("{}@hq", hex.to_uppercase()),
            format!("{}@hq", &hex[1..]),
            format!("{hex}@Hq"),
        ] {
            assert_eq!(
                bad.parse::<DiscussionId>(),
                Err(IdError::DiscussionId),
                "{bad}"
            );
        }
        assert!(format!("f_{}", &hex[1..]).parse::<FileId>().is_err());
        assert!(format!("up_{hex}").parse::<FileId>().is_err());
        assert!("x".parse::<LinkId>().is_err());
    }

    #[test]
    fn device_ids() {
        assert!(
            "0b5c3c3e-6a1f-4f4e-9e4e-3f2a1b0c9d8e"
                .parse::<DeviceId>()
                .is_ok()
        );
        assert!("Laptop-1".parse::<DeviceId>().is_ok());
        assert!("".parse::<DeviceId>().is_err());
        assert!("a/b".parse::<DeviceId>().is_err());
    }
}
