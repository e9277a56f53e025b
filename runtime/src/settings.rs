//! Checking settings a person wrote (a manifest's sections): every refused value becomes one
//! [`FieldError`] naming the field's dotted path, the value as written and what was expected.
//!
//! Each room owns its section and checks it with these (the stream trigger its
//! `[[triggers.stream]]`, cron its `[[triggers.cron]]`, delivery its `retry` table); the
//! manifest composes the sections and adds the file's name to the error. So a rule and its
//! message live beside the setting they guard, and every message has the same shape.

use std::time::Duration;

use crate::names::NameError;
use crate::units::{parse_bytes, parse_duration};

/// A setting refused: `field` = `value`: expected `expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` = {value}: expected {expected}")]
pub struct FieldError {
    /// The field's dotted path, e.g. `triggers.stream[0].batch`.
    pub field: String,
    /// The value found, as written (text quoted).
    pub value: String,
    /// What is accepted.
    pub expected: String,
}

/// What a parser of one written value (an origin, a secret source, a rate, a key path…)
/// expected instead: the end of "field `x` = v: expected …". Typed, so it stays the expected
/// clause until a [`FieldError`] or a command's message puts it beside the field and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Expected(pub String);

impl From<String> for Expected {
    fn from(text: String) -> Self {
        Expected(text)
    }
}

impl From<&str> for Expected {
    fn from(text: &str) -> Self {
        Expected(text.to_owned())
    }
}

impl std::ops::Deref for Expected {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A [`FieldError`] for `field`, whose `value` is shown as given.
pub fn error(field: &str, value: &str, expected: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// Refuses text `value` of `field` (shown quoted) unless `ok`.
pub fn check(field: &str, value: &str, ok: bool, expected: &str) -> Result<(), FieldError> {
    if ok {
        Ok(())
    } else {
        Err(error(field, &format!("{value:?}"), expected))
    }
}

/// A name's verdict ([`crate::names`]) as a field error: the name, then why it was refused.
pub fn name(field: &str, value: &str, verdict: Result<(), NameError>) -> Result<(), FieldError> {
    verdict.map_err(|e| error(field, &format!("{value:?}"), &e.expected()))
}

/// A name made by `make` (a [`crate::names`] type's `new`), as a field error when refused.
pub fn named<T>(
    field: &str,
    value: String,
    make: impl FnOnce(String) -> Result<T, crate::names::InvalidName>,
) -> Result<T, FieldError> {
    let shown = format!("{value:?}");
    make(value).map_err(|e| error(field, &shown, &e.error.expected()))
}

/// A size such as `64MiB`.
pub fn size(field: &str, value: &str) -> Result<u64, FieldError> {
    parse_bytes(value).map_err(|_| error(field, &format!("{value:?}"), "a size such as \"64MiB\""))
}

/// A duration such as `30s`.
pub fn duration(field: &str, value: &str) -> Result<Duration, FieldError> {
    parse_duration(value).map_err(|_| {
        error(
            field,
            &format!("{value:?}"),
            "a duration such as \"500ms\", \"30s\" or \"5m\"",
        )
    })
}

/// A size such as `64MiB` that `ok` accepts (its range), else refused with `expected`.
pub fn size_where(
    field: &str,
    value: &str,
    ok: impl FnOnce(u64) -> bool,
    expected: &str,
) -> Result<u64, FieldError> {
    let bytes = size(field, value)?;
    check(field, value, ok(bytes), expected)?;
    Ok(bytes)
}

/// A duration such as `30s` that `ok` accepts (its range), else refused with `expected`.
pub fn duration_where(
    field: &str,
    value: &str,
    ok: impl FnOnce(Duration) -> bool,
    expected: &str,
) -> Result<Duration, FieldError> {
    let duration = duration(field, value)?;
    check(field, value, ok(duration), expected)?;
    Ok(duration)
}

/// An integer from `min` to `max`, or `default` when the field is absent.
pub fn range(
    field: &str,
    value: Option<i64>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, FieldError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match usize::try_from(value) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(error(
            field,
            &value.to_string(),
            &format!("an integer from {min} to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_the_field_the_value_and_what_was_expected() {
        assert_eq!(range("a.batch", None, 32, 1, 1000), Ok(32));
        let refused = range("a.batch", Some(0), 32, 1, 1000).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "field `a.batch` = 0: expected an integer from 1 to 1000"
        );
        let refused = duration("a.window", "soon").unwrap_err();
        assert_eq!(refused.value, "\"soon\"");
        assert!(refused.expected.contains("duration"), "{refused}");
        assert_eq!(size("a.memory", "64MiB"), Ok(64 * 1024 * 1024));
        assert!(check("a.types", "x", false, "something").is_err());
        let refused = name("a.stream", "a b", crate::names::stream("a b")).unwrap_err();
        assert!(refused.expected.contains("whitespace"), "{refused}");
    }
}
