//! Parsing the human units that appear on the command line and in manifests: byte sizes such as
//! `64MiB` and durations such as `30s`. One place, so both accept exactly the same spellings.

use std::time::Duration;

/// Parses a byte size such as `64MiB`, `512k` or `1048576`.
pub fn parse_bytes(input: &str) -> Result<u64, String> {
    input
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{input:?}: expected a size such as 64MiB or 512KiB ({e})"))
}

/// Parses a duration such as `500ms`, `30s` or `2m`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input)
        .map_err(|e| format!("{input:?}: expected a duration such as 500ms, 30s or 2m ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 * 1024 * 1024);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("soon").is_err());
    }
}
