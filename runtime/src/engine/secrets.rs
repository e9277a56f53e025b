//! A function's secrets: values its manifest names (`[secrets] mailgun_key = "env:MAILGUN_KEY"`)
//! and each host resolves when it loads the function, read by the guest through the `secrets`
//! import.
//!
//! A secret's value stays in the host's memory. The manifest (what Redis and the API hold) names
//! only where it comes from. Everything the host keeps or shows of an invocation (its log lines,
//! stdout and stderr, response body and failure) is passed through [`Secrets::redact`], so a
//! guest that logs a secret verbatim does not leak it into records, dead letters, the host's log
//! or an API answer.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Shortest secret value accepted: 8 bytes. A shorter value would be redacted wherever it
/// happens to occur in ordinary text, and is too short to be a real credential.
pub const MIN_SECRET_BYTES: usize = 8;
/// Longest secret value accepted: 64 KiB.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// What a secret's value is replaced with wherever it is redacted.
pub const REDACTED: &str = "[redacted]";

/// The resolved secrets of one function.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

// Never print the values, even in a debug dump.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl Secrets {
    /// Secrets from resolved `name → value` pairs.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret's value replaced by [`REDACTED`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in self.values.values() {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), REDACTED));
            }
        }
        out
    }

    /// [`redact`](Self::redact) in place.
    pub fn redact_in_place(&self, text: &mut String) {
        if let Cow::Owned(redacted) = self.redact(text) {
            *text = redacted;
        }
    }

    /// [`redact`](Self::redact) of bytes that may hold text.
    pub fn redact_bytes(&self, bytes: &mut Vec<u8>) {
        if self.values.is_empty() {
            return;
        }
        if let Ok(text) = std::str::from_utf8(bytes)
            && let Cow::Owned(redacted) = self.redact(text)
        {
            *bytes = redacted.into_bytes();
        }
    }
}

/// Where a manifest says a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the host.
    Env(String),
    /// A file on the host (e.g. a mounted Kubernetes secret).
    File(std::path::PathBuf),
}

impl SecretSource {
    /// Parses `env:NAME` or `file:/path`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:") {
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Ok(Self::Env(name.to_owned()));
            }
        } else if let Some(path) = text.strip_prefix("file:")
            && !path.is_empty()
        {
            return Ok(Self::File(path.into()));
        }
        Err("\"env:VARIABLE\" or \"file:/path/to/secret\"".to_owned())
    }

    /// Reads the value on this host; the error names the source and says what is wrong.
    pub fn resolve(&self) -> Result<String, String> {
        let value = match self {
            Self::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set on this host"))?,
            Self::File(path) => {
                let bytes = crate::inputs::read_capped(path, MAX_SECRET_BYTES as u64)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                String::from_utf8(bytes)
                    .map_err(|_| format!("{} is not UTF-8 text", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned()
            }
        };
        if value.len() < MIN_SECRET_BYTES || value.len() > MAX_SECRET_BYTES {
            return Err(format!(
                "its value is {} bytes: expected {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} (a \
                 shorter one could not be told apart from ordinary text to redact it)",
                value.len()
            ));
        }
        Ok(value)
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_redacted_and_never_printed() {
        let secrets = Secrets::new([("key".to_owned(), "k3y-abcdefgh".to_owned())].into());
        assert_eq!(
            secrets.redact("auth api:k3y-abcdefgh ok"),
            "auth api:[redacted] ok"
        );
        assert!(matches!(secrets.redact("nothing"), Cow::Borrowed(_)));
        assert!(!format!("{secrets:?}").contains("k3y"));
        let mut body = b"k3y-abcdefgh".to_vec();
        secrets.redact_bytes(&mut body);
        assert_eq!(body, REDACTED.as_bytes());
    }

    #[test]
    fn sources_parse_and_resolve_with_a_named_error() {
        assert_eq!(
            SecretSource::parse("env:MAILGUN_KEY"),
            Ok(SecretSource::Env("MAILGUN_KEY".into()))
        );
        assert!(SecretSource::parse("file:/run/secrets/mailgun").is_ok());
        for bad in ["MAILGUN_KEY", "env:", "env:A-B", "file:", "vault:x"] {
            assert!(SecretSource::parse(bad).is_err(), "{bad}");
        }
        let missing = SecretSource::Env("EDDY_TEST_NO_SUCH_SECRET".into()).resolve();
        assert!(missing.unwrap_err().contains("EDDY_TEST_NO_SUCH_SECRET"));
    }
}
