//! The store's write-ahead log: numbered segment files of framed records, appended and
//! fsynced once per group commit.
//!
//! A record is `len: u32 LE`, `crc32: u32 LE` (of the payload), then `len` payload bytes. A
//! crash can leave the last write of the newest segment torn; replay stops at the first record
//! that is short or fails its checksum there (that write was never reported durable). The
//! same damage in an older segment, which was fsynced whole before the next one began, is
//! corruption and is reported.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes before the payload: length and checksum.
const HEADER: usize = 8;
/// A record larger than this is not one the writer made (the largest change is one message).
const MAX_RECORD: usize = 64 << 20;

/// One segment file: `<stem>.log.<number>` beside the store's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub(super) number: u64,
    pub(super) path: PathBuf,
}

/// Segments beside `store` (the redb file), oldest first.
pub(super) fn segments(store: &Path) -> io::Result<Vec<Segment>> {
    let (dir, prefix) = naming(store);
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .and_then(|number| number.parse::<u64>().ok())
        else {
            continue;
        };
        found.push(Segment {
            number,
            path: entry.path(),
        });
    }
    found.sort_by_key(|segment| segment.number);
    Ok(found)
}

/// The path of segment `number` beside `store`.
pub(super) fn segment_path(store: &Path, number: u64) -> PathBuf {
    let (dir, prefix) = naming(store);
    dir.join(format!("{prefix}{number:010}"))
}

fn naming(store: &Path) -> (PathBuf, String) {
    let dir = match store.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let stem = store
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("sessions");
    (dir, format!("{stem}.log."))
}

/// Appends one framed record to `buffer`, its payload written by `write` in place.
pub(super) fn frame_with(buffer: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; HEADER]);
    write(buffer);
    let payload = &buffer[start + HEADER..];
    // A record is one change; the writer never makes one near 4 GiB.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    buffer[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buffer[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The records of one segment's bytes, in order. `newest`: a torn tail is expected (and
/// dropped) rather than reported.
pub(super) fn records(bytes: &[u8], newest: bool) -> Result<Vec<&[u8]>, String> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let torn = |what: &str| -> Result<Vec<&[u8]>, String> {
            Err(format!(
                "{what} at byte {} of {}",
                bytes.len() - rest.len(),
                bytes.len()
            ))
        };
        if rest.len() < HEADER {
            if newest {
                break;
            }
            return torn("truncated record header");
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let body = &rest[HEADER..];
        if len > MAX_RECORD || body.len() < len || crc32fast::hash(&body[..len]) != crc {
            if newest {
                break;
            }
            return torn("damaged record");
        }
        found.push(&body[..len]);
        rest = &body[len..];
    }
    Ok(found)
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Appender {
    file: File,
    number: u64,
    written: u64,
}

impl Appender {
    /// Creates segment `number` (it must not exist) and makes its directory entry durable.
    pub(super) fn create(store: &Path, number: u64) -> io::Result<Self> {
        let path = segment_path(store, number);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(&path)?;
        Ok(Self {
            file,
            number,
            written: 0,
        })
    }

    /// Writes `bytes` (whole records) and fsyncs them.
    pub(super) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// This segment's number.
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    /// Bytes appended so far.
    pub(super) fn written(&self) -> u64 {
        self.written
    }
}

/// Makes a created or removed file's directory entry durable.
pub(super) fn sync_dir(file: &Path) -> io::Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for payload in payloads {
            frame_with(&mut bytes, |buffer| buffer.extend_from_slice(payload));
        }
        bytes
    }

    #[test]
    fn records_come_back_in_order() {
        let bytes = framed(&[b"one", b"", b"three"]);
        let found = records(&bytes, false).expect("intact");
        assert_eq!(found, vec![&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn a_torn_tail_of_the_newest_segment_is_dropped() {
        let bytes = framed(&[b"one", b"two"]);
        for cut in 1..bytes.len() - (HEADER + 3) {
            let kept = records(&bytes[..bytes.len() - cut], true).expect("torn tail");
            assert_eq!(kept, vec![&b"one"[..]], "cut {cut}");
        }
    }

    #[test]
    fn damage_in_an_older_segment_is_reported() {
        let mut bytes = framed(&[b"one", b"two"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(records(&bytes, false).is_err());
        assert_eq!(records(&bytes, true).expect("newest"), vec![&b"one"[..]]);
        assert!(records(&bytes[..bytes.len() - 2], false).is_err());
    }

    #[test]
    fn segments_are_listed_oldest_first_and_others_ignored() {
        let dir = std::env::temp_dir().join(format!("imgate-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = dir.join("sessions.redb");
        for number in [12, 3, 7] {
            Appender::create(&store, number).expect("create");
        }
        std::fs::write(dir.join("sessions.log.tmp"), b"").expect("other");
        std::fs::write(dir.join("push.log.00001"), b"").expect("other");
        let numbers: Vec<u64> = segments(&store)
            .expect("list")
            .iter()
            .map(|s| s.number)
            .collect();
        assert_eq!(numbers, vec![3, 7, 12]);
        assert!(
            Appender::create(&store, 7).is_err(),
            "a segment is never reused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
