//! A function's secrets: values its manifest names (`[secrets] mailgun_key = "env:MAILGUN_KEY"`)
//! and each host resolves when it loads the function, read by the guest through the `secrets`
//! import.
//!
//! A secret's value stays in the host's memory. The manifest (what Redis and the API hold) names
//! only where it comes from. Everything the host keeps or shows of an invocation (its log lines,
//! stdout and stderr, response body and failure) is passed through [`Secrets::redact`], so a
//! guest that logs a secret does not leak it into records, dead letters, the host's log or an
//! API answer. Redaction works on bytes, so text that is not UTF-8 around a secret does not hide
//! it; it also finds the forms a secret takes when a guest formats it in the usual ways (escaped
//! in JSON, percent-encoded in a URL, one line of a multi-line key), and a secret cut in two by
//! an output limit leaves no prefix behind ([`Secrets::redact_cut`]).

use crate::settings::Expected;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Shortest secret value accepted: 8 bytes. A shorter value would be redacted wherever it
/// happens to occur in ordinary text, and is too short to be a real credential.
pub const MIN_SECRET_BYTES: usize = 8;
/// Longest secret value accepted: 64 KiB.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// What a secret's value is replaced with wherever it is redacted.
pub const REDACTED: &str = "[redacted]";
/// Shortest start of a secret redacted at the end of text an output limit cut: shorter ones
/// give away too little to be worth the false matches.
pub const MIN_CUT_PREFIX_BYTES: usize = 4;

/// The resolved secrets of one function.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    /// Every form of every value that is redacted, longest first, so a long form is replaced
    /// whole before a shorter one (a line of it) could split it.
    needles: Vec<String>,
}

// Never print the values, even in a debug dump.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

/// What URL encoders escape in a query or path component: all but letters, digits and `-._~`.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The forms of `value` a guest's output may hold: itself, escaped in a JSON string,
/// percent-encoded, and each line of a multi-line value (a PEM key printed line by line).
fn forms(value: &str) -> Vec<String> {
    let json = |text: &str| {
        let quoted = serde_json::to_string(text).unwrap_or_default();
        quoted[1..quoted.len() - 1].to_owned()
    };
    let mut forms = vec![
        value.to_owned(),
        json(value),
        percent_encoding::utf8_percent_encode(value, URL_COMPONENT).to_string(),
    ];
    if value.contains('\n') {
        for line in value.lines().map(|l| l.trim_end_matches('\r')) {
            if line.len() >= MIN_SECRET_BYTES {
                forms.push(line.to_owned());
                forms.push(json(line));
            }
        }
    }
    forms
}

impl Secrets {
    /// Secrets from resolved `name → value` pairs.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        let mut needles: Vec<String> = values.values().flat_map(|v| forms(v)).collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { values, needles }
    }

    /// These secrets with `more` added (a name in both takes the value from `more`).
    pub fn with(self, more: BTreeMap<String, String>) -> Self {
        let mut values = self.values;
        values.extend(more);
        Self::new(values)
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every form of every secret replaced by [`REDACTED`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = Cow::Owned(out.replace(needle.as_str(), REDACTED));
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

    /// [`redact`](Self::redact) of bytes, text or not.
    pub fn redact_bytes(&self, bytes: &mut Vec<u8>) {
        for needle in &self.needles {
            let finder = memchr::memmem::Finder::new(needle.as_bytes());
            if finder.find(bytes).is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(bytes.len());
            let mut rest = &bytes[..];
            while let Some(at) = finder.find(rest) {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(REDACTED.as_bytes());
                rest = &rest[at + needle.len()..];
            }
            out.extend_from_slice(rest);
            *bytes = out;
        }
    }

    /// How many bytes at the end of `bytes` are the start of a secret (at least
    /// [`MIN_CUT_PREFIX_BYTES`] of it): what is left of a secret where a limit cut the text.
    fn cut_prefix(&self, bytes: &[u8]) -> usize {
        self.needles
            .iter()
            .filter_map(|needle| {
                let needle = needle.as_bytes();
                // Only the last `len - 1` bytes can hold a start that the text cut short.
                let window = &bytes[bytes.len().saturating_sub(needle.len() - 1)..];
                memchr::memchr_iter(needle[0], window)
                    .map(|at| window.len() - at)
                    .find(|&n| {
                        n >= MIN_CUT_PREFIX_BYTES && needle.starts_with(&window[window.len() - n..])
                    })
            })
            .max()
            .unwrap_or(0)
    }

    /// Redacts what is left of a secret at the end of `text`, which a limit cut: call after
    /// [`redact_in_place`](Self::redact_in_place) on text that was cut.
    pub fn redact_cut(&self, text: &mut String) {
        let n = self.cut_prefix(text.as_bytes());
        if n > 0 {
            // The prefix is the start of a UTF-8 needle that ended the text, so the cut point
            // is a character boundary unless the text was cut inside a character; be safe.
            let mut at = text.len() - n;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
            text.push_str(REDACTED);
        }
    }

    /// [`redact_cut`](Self::redact_cut) of bytes.
    pub fn redact_cut_bytes(&self, bytes: &mut Vec<u8>) {
        let n = self.cut_prefix(bytes);
        if n > 0 {
            bytes.truncate(bytes.len() - n);
            bytes.extend_from_slice(REDACTED.as_bytes());
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
    pub fn parse(text: &str) -> Result<Self, Expected> {
        if let Some(name) = text.strip_prefix("env:") {
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Ok(Self::Env(name.to_owned()));
            }
        } else if let Some(path) = text.strip_prefix("file:")
            && !path.is_empty()
        {
            return Ok(Self::File(path.into()));
        }
        Err(Expected::from(
            "\"env:VARIABLE\" or \"file:/path/to/secret\"",
        ))
    }

    /// Reads the value for a function deployed through the API, whose manifest a token holder
    /// wrote: not the host's own settings (`EDDY_*` variables: its token, its Redis URL), and
    /// files only under one of `dirs` (the host's `--secret-dir`s), so deploying does not grant
    /// reading the host's files.
    pub fn resolve_deployed(&self, dirs: &[std::path::PathBuf]) -> Result<String, String> {
        match self {
            Self::Env(name) if name.to_ascii_uppercase().starts_with("EDDY_") => {
                return Err(
                    "EDDY_* variables are the host's own settings, not readable by a deployed \
                     function: give the secret another variable name"
                        .to_owned(),
                );
            }
            Self::Env(_) => {}
            Self::File(path) => {
                if !path.is_absolute() {
                    return Err(
                        "expected an absolute path: a deployed function's manifest has \
                                no folder on the host to resolve it against"
                            .to_owned(),
                    );
                }
                if dirs.is_empty() {
                    return Err(
                        "this host reads no secret files for deployed functions: start \
                                it with --secret-dir DIR to allow those under DIR"
                            .to_owned(),
                    );
                }
                // Compared after resolving links and `..`, so no path escapes its folder.
                let real = std::fs::canonicalize(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let inside = dirs
                    .iter()
                    .any(|dir| std::fs::canonicalize(dir).is_ok_and(|dir| real.starts_with(dir)));
                if !inside {
                    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                    return Err(format!(
                        "expected a file under this host's --secret-dir ({})",
                        dirs.join(", ")
                    ));
                }
            }
        }
        self.resolve()
    }

    /// Reads the value on this host; the error names the source and says what is wrong.
    pub fn resolve(&self) -> Result<String, String> {
        let value = match self {
            Self::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set on this host"))?,
            Self::File(path) => {
                let bytes = read_secret_file(path)
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

/// Reads a secret file: a regular file only, opened without blocking, so a pipe or a device
/// named as a secret is refused at once instead of stalling the thread that loads the function.
fn read_secret_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let not_regular = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file: expected a file holding the secret",
        )
    };
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // Checked again on what was opened: the path may have been swapped in between.
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    crate::inputs::read_capped_from(file, MAX_SECRET_BYTES as u64)
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
    fn bytes_that_are_not_text_do_not_hide_a_secret() {
        let secrets = Secrets::new([("key".to_owned(), "k3y-abcdefgh".to_owned())].into());
        let mut body = b"\xffkey k3y-abcdefgh\xfe".to_vec();
        secrets.redact_bytes(&mut body);
        assert_eq!(body, b"\xffkey [redacted]\xfe");
    }

    #[test]
    fn escaped_encoded_and_multi_line_forms_are_redacted() {
        let pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----";
        let secrets = Secrets::new(
            [
                ("quote".to_owned(), "abc\"def\\ghijkl".to_owned()),
                ("accent".to_owned(), "pässwörd-1234567".to_owned()),
                ("pem".to_owned(), pem.to_owned()),
            ]
            .into(),
        );
        let json = serde_json::json!({ "error": format!("boom {pem} abc\"def\\ghijkl") });
        let text = secrets.redact(&json.to_string()).into_owned();
        assert!(
            !text.contains("MIIBOgIBAAJBAKj34GkxFhD9") && !text.contains("ghijkl"),
            "{text}"
        );
        let url = "https://x/?p=p%C3%A4ssw%C3%B6rd-1234567";
        assert_eq!(secrets.redact(url), "https://x/?p=[redacted]");
        assert_eq!(
            secrets.redact("line: MIIBOgIBAAJBAKj34GkxFhD9"),
            "line: [redacted]"
        );
    }

    #[test]
    fn a_secret_cut_by_a_limit_leaves_no_prefix() {
        let secrets = Secrets::new([("key".to_owned(), "k3y-abcdefgh".to_owned())].into());
        let mut text = "padding k3y-abcd".to_owned();
        secrets.redact_cut(&mut text);
        assert_eq!(text, "padding [redacted]");
        let mut short = "padding k3y".to_owned();
        secrets.redact_cut(&mut short);
        assert_eq!(
            short, "padding k3y",
            "fewer than MIN_CUT_PREFIX_BYTES are kept"
        );
        let mut bytes = b"\xff k3y-ab".to_vec();
        secrets.redact_cut_bytes(&mut bytes);
        assert_eq!(bytes, b"\xff [redacted]");
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

    #[test]
    fn a_pipe_or_a_folder_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        for source in [
            SecretSource::File(fifo),
            SecretSource::File(dir.path().into()),
        ] {
            let error = source.resolve().unwrap_err();
            assert!(error.contains("not a regular file"), "{error}");
        }
    }

    #[test]
    fn deployed_functions_read_neither_host_settings_nor_files_outside_secret_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("allowed");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("key"), "a-secret-value\n").unwrap();
        std::fs::write(dir.path().join("other"), "another-value").unwrap();
        let dirs = vec![inside.clone()];
        let ok = SecretSource::File(inside.join("key")).resolve_deployed(&dirs);
        assert_eq!(ok.unwrap(), "a-secret-value");
        let escape = SecretSource::File(inside.join("../other")).resolve_deployed(&dirs);
        assert!(escape.unwrap_err().contains("--secret-dir"));
        let none = SecretSource::File(inside.join("key")).resolve_deployed(&[]);
        assert!(none.unwrap_err().contains("--secret-dir"));
        let relative = SecretSource::File("key".into()).resolve_deployed(&dirs);
        assert!(relative.unwrap_err().contains("absolute"));
        let own = SecretSource::Env("EDDY_REDIS_URL".into()).resolve_deployed(&dirs);
        assert!(own.unwrap_err().contains("EDDY_*"));
    }
}
