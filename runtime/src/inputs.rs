//! Local input files, read with a cap: a manifest, a component, a token, an event's data. A
//! path can name something endless (`/dev/zero`, a pipe that never closes) or huge; every read
//! of one stops one byte past its cap and says which file and what was expected, instead of
//! growing until the machine runs out of memory.

use std::io::Read;
use std::path::Path;

/// Reads at most `max` bytes from `reader`; an `InvalidData` error when there are more.
pub fn read_capped_from(reader: impl Read, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {max} bytes: expected at most {max}"),
        ));
    }
    Ok(bytes)
}

/// Reads the file at `path`, at most `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    read_capped_from(std::fs::File::open(path)?, max)
}

/// Reads the UTF-8 text file at `path`, at most `max` bytes.
pub fn read_capped_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_capped(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_input_stops_one_byte_past_the_cap() {
        let endless = std::io::repeat(b'x');
        let error = read_capped_from(endless, 1024).unwrap_err();
        assert!(error.to_string().contains("at most 1024"), "{error}");
        assert_eq!(read_capped_from(&b"abc"[..], 3).unwrap(), b"abc");
    }
}
