//! Names people and programs give Eddy: one validation for each kind, used by every door a
//! name comes in through (manifests, the HTTP API, cronjobs, the CLI, a guest's `publish`).
//!
//! Three kinds:
//! - **identifiers** name functions, cron triggers, cronjobs, key-value buckets and secrets:
//!   1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter or digit;
//! - **stream names** name streams, consumer groups and dead-letter streams: 1 to 256 bytes of
//!   ASCII letters, digits and `. _ - : / @ +`;
//! - **event types** (a CloudEvents `type`) are any text of 1 to 256 bytes without control
//!   characters, since they are shown in logs, records and the page.
//!
//! Both refuse what would let a name reach into someone else's keys: a stream name may not
//! start with `eddy:` in any case (Eddy's own keys: registry, deployments, cron state), and
//! neither kind holds `{` or `}` (Redis Cluster hash tags, which Eddy's keys use to keep one
//! stream's keys in one slot; a brace in a name could make two names share a key). URL
//! specials (`?`, `#`, `%`, spaces) are refused too, so a name is the same in a path, a shell
//! and a log line.
//!
//! Names that travel through the host are typed: [`FunctionName`], [`StreamName`],
//! [`GroupName`] and [`BucketName`] are made only through their `new` (or serde), which applies
//! the kind's rule, and refuse with one message per kind ([`InvalidName`]: "stream name … :
//! expected …") whichever door the name came in by. A door that only checks uses the type's
//! `check`, which keeps no copy.
//!
//! Text from outside that is shown rather than checked (a guest's log line, an event id, an
//! error message) goes through [`Escaped`], which writes control characters as escapes.

/// Longest identifier (function, cron trigger, cronjob, bucket or secret name).
const MAX_IDENTIFIER_BYTES: usize = 64;
/// Longest stream, group or dead-letter stream name. Redis allows more; a longer one is surely
/// a mistake.
const MAX_STREAM_NAME_BYTES: usize = 256;
/// Longest event type.
pub const MAX_EVENT_TYPE_BYTES: usize = 256;
/// The prefix of Eddy's own Redis keys, reserved in any case.
const RESERVED_PREFIX: &str = "eddy:";
/// The punctuation a stream name may hold besides ASCII letters and digits.
const STREAM_PUNCTUATION: &str = "._-:/@+";

/// Why a name was refused; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty (or, for an event type, blank).
    #[error("the name is empty: expected {0}")]
    Empty(&'static str),
    /// The name is longer than allowed.
    #[error("{name:?} is {len} bytes long: expected {expected}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
        /// What is accepted.
        expected: &'static str,
    },
    /// The name holds a character the kind does not allow.
    #[error("{name:?} holds {}: expected {expected}", describe(*found))]
    Character {
        /// The name.
        name: String,
        /// The first character refused.
        found: char,
        /// What is accepted.
        expected: &'static str,
    },
    /// The name starts with Eddy's reserved prefix.
    #[error(
        "{0:?} starts with {RESERVED_PREFIX:?}: names starting with it, in any case, are Eddy's \
         own keys"
    )]
    Reserved(String),
}

impl NameError {
    /// What was expected instead, as the end of a sentence: "field `x` = "a?b": expected …".
    pub fn expected(&self) -> String {
        match self {
            NameError::Empty(expected) => (*expected).to_owned(),
            NameError::TooLong { len, expected, .. } => format!("{expected} (not {len} bytes)"),
            NameError::Character {
                found, expected, ..
            } => format!("{expected} (not {})", describe(*found)),
            NameError::Reserved(_) => format!(
                "a name not starting with {RESERVED_PREFIX:?}, in any case: those are Eddy's own \
                 keys"
            ),
        }
    }
}

/// A refused character, as a message names it.
fn describe(c: char) -> String {
    match c {
        c if c.is_whitespace() => format!("whitespace {c:?}"),
        c if c.is_control() => format!("a control character {c:?}"),
        '{' | '}' => format!("a brace {c:?}"),
        c => format!("{c:?}"),
    }
}

const IDENTIFIER: &str =
    "1 to 64 lowercase letters, digits, '-' or '_', starting with a letter or digit";
const STREAM: &str = "1 to 256 bytes of ASCII letters, digits and . _ - : / @ +";
const EVENT_TYPE: &str = "1 to 256 bytes of text with no control characters";

/// Checks an event type, from a producer, a guest's `publish` or a cronjob.
pub fn event_type(name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty(EVENT_TYPE));
    }
    if name.len() > MAX_EVENT_TYPE_BYTES {
        return Err(NameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
            expected: EVENT_TYPE,
        });
    }
    if let Some(found) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::Character {
            name: name.to_owned(),
            found,
            expected: EVENT_TYPE,
        });
    }
    Ok(())
}

/// Checks a function, cron trigger, cronjob, bucket or secret name.
pub fn identifier(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(IDENTIFIER));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(NameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
            expected: IDENTIFIER,
        });
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if let Some(found) = name.chars().find(|c| !allowed(*c)) {
        return Err(NameError::Character {
            name: name.to_owned(),
            found,
            expected: IDENTIFIER,
        });
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(NameError::Character {
            name: name.to_owned(),
            found: name.chars().next().unwrap_or_default(),
            expected: IDENTIFIER,
        });
    }
    Ok(())
}

/// Checks a stream, consumer group or dead-letter stream name given by a user or a guest.
pub fn stream(name: &str) -> Result<(), NameError> {
    stream_shape(name)?;
    if is_reserved(name) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

fn stream_shape(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(STREAM));
    }
    if name.len() > MAX_STREAM_NAME_BYTES {
        return Err(NameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
            expected: STREAM,
        });
    }
    if let Some(found) = name
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !STREAM_PUNCTUATION.contains(*c))
    {
        return Err(NameError::Character {
            name: name.to_owned(),
            found,
            expected: STREAM,
        });
    }
    Ok(())
}

/// Whether `name` starts with [`RESERVED_PREFIX`], in any case.
fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// A name refused as one kind of name: says which kind, then why ("stream name \"a b\" holds
/// whitespace ' ': expected …"). The one message each kind has, wherever the name came in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {error}")]
pub struct InvalidName {
    /// The kind: "function name", "stream name", "consumer group name", "bucket name".
    pub kind: &'static str,
    /// Why it was refused (already in the message, so not a `source`: a chain of errors
    /// would print it twice).
    pub error: NameError,
}

/// Declares a validated name type: made only through `new` (or serde), which applies `$check`.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        // Shown as the text it holds, quoted, as a `String` is: messages write names with
        // `{:?}`, and a type name in them would mean nothing to the reader.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl $name {
            /// The kind of name, as messages say it.
            pub const KIND: &'static str = $kind;

            /// `text` as this kind of name, or why it is not one.
            pub fn new(text: impl Into<String>) -> Result<Self, InvalidName> {
                let text = text.into();
                Self::check(&text)?;
                Ok(Self(text))
            }

            /// Whether `text` is this kind of name, without keeping it: for a door that only
            /// checks (the per-event path, where a copy would cost).
            pub fn check(text: &str) -> Result<(), InvalidName> {
                $check(text).map_err(|error| InvalidName { kind: $kind, error })
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::new(text).map_err(serde::de::Error::custom)
            }
        }

        impl redis::ToRedisArgs for $name {
            fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
                out.write_arg(self.0.as_bytes())
            }
        }
    };
}

name_type!(
    /// A function's name: an identifier ([`identifier`]).
    FunctionName,
    "function name",
    identifier
);
name_type!(
    /// A stream's name, a dead-letter stream's included ([`stream`]).
    StreamName,
    "stream name",
    stream
);
impl StreamName {
    /// One of Eddy's own streams (a cron trigger's tick stream and its dead-letter stream),
    /// under the reserved prefix that [`StreamName::new`] refuses. Built by the host from a
    /// valid identifier, never taken from input.
    pub fn eddy_own(text: String) -> Result<Self, InvalidName> {
        let refuse = |error| InvalidName {
            kind: Self::KIND,
            error,
        };
        stream_shape(&text).map_err(refuse)?;
        if !is_reserved(&text) {
            return Err(refuse(NameError::Character {
                found: text.chars().next().unwrap_or_default(),
                name: text,
                expected: "a name starting with \"eddy:\"",
            }));
        }
        Ok(Self(text))
    }
}

name_type!(
    /// A consumer group's name: the stream rule ([`stream`]), since Redis keys carry it.
    GroupName,
    "consumer group name",
    stream
);
name_type!(
    /// A key-value bucket's name: an identifier ([`identifier`]).
    BucketName,
    "bucket name",
    identifier
);

/// Text with control characters (line breaks, escape sequences, bidirectional overrides)
/// written as escapes.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control()
                    || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
                {
                    write!(f, "\\u{{{:x}}}", c as u32)?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_type_has_one_rule_and_one_message() {
        assert_eq!(FunctionName::new("orders").unwrap().as_str(), "orders");
        let refused = FunctionName::new("Orders").unwrap_err();
        assert!(
            refused.to_string().starts_with("function name \"Orders\""),
            "{refused}"
        );
        let refused = StreamName::new("eddy:deployments").unwrap_err();
        assert!(refused.to_string().starts_with("stream name "), "{refused}");
        assert!(matches!(refused.error, NameError::Reserved(_)));
        assert!(
            GroupName::new("a b")
                .unwrap_err()
                .to_string()
                .starts_with("consumer group name ")
        );
        assert!(BucketName::new("cart").is_ok());
        assert_eq!(
            format!("{:?}", FunctionName::new("f").unwrap()),
            "\"f\"",
            "messages quote a name as they quote text"
        );
        let read: Result<StreamName, _> = serde_json::from_str("\"a?b\"");
        assert!(
            read.unwrap_err().to_string().contains("stream name"),
            "serde applies the rule"
        );
    }

    #[test]
    fn identifiers_are_lowercase_words() {
        for good in ["order-confirmation", "a", "f_1", "9lives"] {
            assert!(identifier(good).is_ok(), "{good}");
        }
        for bad in ["", "Bad", "-lead", "a b", "eddy:x", "a{b}", &"x".repeat(65)] {
            assert!(identifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_names_refuse_braces_specials_and_the_reserved_prefix() {
        for good in [
            "orders",
            "orders.dlq",
            "app:orders/v2",
            "a@b+c",
            "t-0a1b2c3d",
        ] {
            assert!(stream(good).is_ok(), "{good}");
        }
        assert!(matches!(
            stream("EDDY:deployments"),
            Err(NameError::Reserved(_))
        ));
        assert!(matches!(stream("eddy:x"), Err(NameError::Reserved(_))));
        assert!(matches!(
            stream("kb}:kc"),
            Err(NameError::Character { found: '}', .. })
        ));
        for bad in [
            "",
            "a b",
            "a?b",
            "a#b",
            "a%2F",
            "a\nb",
            "é",
            &"s".repeat(257),
        ] {
            assert!(stream(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_say_what_was_expected() {
        let message = stream("a?b").unwrap_err().to_string();
        assert!(
            message.contains("'?'") && message.contains("expected"),
            "{message}"
        );
        assert!(
            stream("eddy").is_ok(),
            "only the prefix with its colon is reserved"
        );
    }
}
