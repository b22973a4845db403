//! Where the journal's events are: append-only segment files beside the sled database, one
//! record per writer batch, and an index in memory of the events no snapshot covers yet.
//!
//! `{storage.path}/events/{first seq, 20 digits}.events`, each a run of records:
//! `len (u32 le) | crc32 of the payload (u32 le) | payload`, the payload being the batch's
//! first and last sequence numbers (be u64 each), then its events as one JSON array.
//!
//! Why not sled: keyed by chat, the events of 1,000 chats landed in 1,000 places of sled's tree,
//! ~45% of a webhook's CPU; stored as one sled value per batch they made sled split and rewrite
//! leaves of hundreds of KiB, written out as blobs (docs/benchmarks.md, eighth round). A file
//! is written once and read back only by a conversation that starts or recovers.
//!
//! The log is what makes an event durable: a record is written (and, with `durability =
//! "flush"`, synced) before sled gets the batch's redelivery checks, uncovered marks and last
//! sequence number, which are rebuilt from the log at open if a crash cut them off. A torn
//! record at the end of the newest segment is cut off at open.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use linedesk_actors::domain::ConversationKey;
use serde_json::value::RawValue;

use super::journal::StoredEvent;
use super::StorageError;

/// A segment is closed past this size, or once its first event is older than the retention.
pub(super) const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

const HEADER: usize = 8;
const PAYLOAD_HEADER: usize = 16;

fn io_error(path: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::EventLog(format!("{}: {e}", path.display()))
}

/// Where one event is: its segment (named by its first sequence number) and bytes; segment 0
/// is no segment: the journal set the event aside in sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// One record read back, with where each of its events is.
pub(super) struct Record {
    pub events: Vec<(StoredEvent, Place)>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Sequence number of its first event.
    first: u64,
    /// Of its last event; 0 while empty.
    last: u64,
    /// When its first event was received (ms since the epoch; for a segment of an earlier run,
    /// when the file was last written).
    opened_ms: i64,
    /// When its newest event was received.
    newest_ms: i64,
}

/// The segment files; one writer appends, anyone reads.
pub(super) struct EventLog {
    dir: PathBuf,
    sync: bool,
    segment_bytes: u64,
    /// Closed and current segments by first sequence number.
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to, and its length.
    current: Option<(u64, File, u64)>,
    /// fsyncs issued, for metrics.
    syncs: u64,
}

impl EventLog {
    /// Opens (or creates) the folder, and cuts a torn record off the newest segment.
    pub fn open(dir: &Path, sync: bool, segment_bytes: u64) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut this = Self {
            dir: dir.to_owned(),
            sync,
            segment_bytes,
            segments: BTreeMap::new(),
            current: None,
            syncs: 0,
        };
        for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let path = entry.map_err(|e| io_error(dir, e))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".events"))
                .and_then(|n| n.parse::<u64>().ok());
            let Some(first) = first else { continue };
            let modified = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(|e| io_error(&path, e))?;
            let newest_ms = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            this.segments.insert(
                first,
                Segment {
                    first,
                    last: 0,
                    opened_ms: newest_ms,
                    newest_ms,
                },
            );
        }
        // Each segment's last event is the next one's first minus one; the newest is read.
        let firsts: Vec<u64> = this.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            if let Some(segment) = this.segments.get_mut(&pair[0]) {
                segment.last = pair[1] - 1;
            }
        }
        if let Some(&newest) = firsts.last() {
            let (len, last) = this.cut_torn(newest)?;
            let segment = this.segments.get_mut(&newest).expect("listed");
            segment.last = last;
            if len == 0 {
                let path = this.path(newest);
                this.segments.remove(&newest);
                fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
            }
        }
        Ok(this)
    }

    fn path(&self, first: u64) -> PathBuf {
        segment_path(&self.dir, first)
    }

    /// The folder of the segments, for [`read_events`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Truncates segment `first` after its last whole record; returns its length then, and
    /// its last sequence number.
    fn cut_torn(&self, first: u64) -> Result<(u64, u64), StorageError> {
        let path = self.path(first);
        let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
        let mut end = 0usize;
        let mut last = 0;
        for (at, record) in Frames::new(&bytes) {
            let Ok(payload) = record else { break };
            let Ok((_, record_last)) = payload_seqs(payload) else {
                break;
            };
            end = at + HEADER + payload.len();
            last = record_last;
        }
        if end < bytes.len() {
            tracing::warn!(
                segment = %path.display(),
                kept = end,
                cut = bytes.len() - end,
                "a torn record cut off the journal's newest segment"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_error(&path, e))?;
            file.set_len(end as u64).map_err(|e| io_error(&path, e))?;
            file.sync_all().map_err(|e| io_error(&path, e))?;
        }
        Ok((end as u64, last))
    }

    /// Appends one batch's events (in sequence order, at least one); returns where each is.
    /// Synced before returning when the journal is `flush`. Ages are the events' receipt.
    pub fn append(
        &mut self,
        events: &[StoredEvent],
        retention_ms: i64,
    ) -> Result<Vec<Place>, StorageError> {
        let first = events.first().map_or(0, |e| e.seq);
        let last = events.last().map_or(0, |e| e.seq);
        let now_ms = events.iter().map(|e| e.received_at_ms).max().unwrap_or(0);
        let rotate = match (&self.current, self.segments.values().next_back()) {
            (Some((_, _, len)), Some(segment)) => {
                *len >= self.segment_bytes
                    || (retention_ms > 0
                        && segment.opened_ms.saturating_add(retention_ms) <= now_ms)
            }
            _ => true,
        };
        if rotate {
            self.start_segment(first, now_ms)?;
        }
        let (segment, file, len) = self.current.as_mut().expect("just opened");
        let mut payload = Vec::with_capacity(PAYLOAD_HEADER + events.len() * 640);
        payload.extend_from_slice(&first.to_be_bytes());
        payload.extend_from_slice(&last.to_be_bytes());
        let base = *len + HEADER as u64;
        let mut places = Vec::with_capacity(events.len());
        payload.push(b'[');
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                payload.push(b',');
            }
            let start = payload.len();
            // unwrap: serialising strings, integers and already-valid JSON cannot fail.
            serde_json::to_writer(&mut payload, event).unwrap();
            places.push(Place {
                seq: event.seq,
                segment: *segment,
                offset: base + start as u64,
                len: (payload.len() - start) as u32,
            });
        }
        payload.push(b']');
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let path = self.dir.join(format!("{segment:020}.events"));
        let written = file.write_all(&frame).and_then(|()| match self.sync {
            true => file.sync_data(),
            false => Ok(()),
        });
        if let Err(e) = written {
            // Nothing of a failed batch may stay: its sequence numbers are handed out again.
            let _ = file.set_len(*len);
            return Err(io_error(&path, e));
        }
        *len += frame.len() as u64;
        self.syncs += u64::from(self.sync);
        let segment = self.segments.get_mut(segment).expect("listed");
        segment.last = last;
        segment.newest_ms = now_ms;
        Ok(places)
    }

    /// Removes a record `append` just wrote, whose sled batch failed.
    pub fn undo_last(&mut self, places: &[Place]) -> Result<(), StorageError> {
        let (Some(first), Some((segment, file, len))) = (places.first(), self.current.as_mut())
        else {
            return Ok(());
        };
        let start = first.offset - HEADER as u64 - 1 - PAYLOAD_HEADER as u64;
        let path = self.dir.join(format!("{segment:020}.events"));
        file.set_len(start).map_err(|e| io_error(&path, e))?;
        *len = start;
        Ok(())
    }

    fn start_segment(&mut self, first: u64, now_ms: i64) -> Result<(), StorageError> {
        let path = self.path(first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        if self.sync {
            // The new name must survive a power cut too.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(&self.dir, e))?;
        }
        self.segments.entry(first).or_insert(Segment {
            first,
            last: 0,
            opened_ms: now_ms,
            newest_ms: now_ms,
        });
        self.current = Some((first, file, len));
        Ok(())
    }

    /// Reads the events at `places`, in order.
    pub fn read(&self, places: &[Place]) -> Result<Vec<StoredEvent>, StorageError> {
        read_events(&self.dir, places)
    }

    /// Every record with an event at or after `from`, oldest first.
    pub fn records_from(&self, from: u64) -> Result<Vec<Record>, StorageError> {
        let start = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(0, |(first, _)| *first);
        let mut records = Vec::new();
        for &first in self.segments.range(start..).map(|(first, _)| first) {
            let path = self.path(first);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io_error(&path, e))?;
            for (at, payload) in Frames::new(&bytes) {
                let payload = payload.map_err(|e| io_error(&path, e))?;
                let (_, last) = payload_seqs(payload).map_err(|e| io_error(&path, e))?;
                if last < from {
                    continue;
                }
                let base = (at + HEADER) as u64;
                let events = decode_events(payload, first, base).map_err(|e| io_error(&path, e))?;
                records.push(Record { events });
            }
        }
        Ok(records)
    }

    /// The oldest segment: (first, last sequence number (0 while empty), newest receipt).
    pub fn oldest(&self) -> Option<(u64, u64, i64)> {
        let segment = self.segments.values().next()?;
        Some((segment.first, segment.last, segment.newest_ms))
    }

    /// Deletes the oldest segment (closing it if it is the current one).
    pub fn remove_oldest(&mut self) -> Result<(), StorageError> {
        let Some((first, _, _)) = self.oldest() else {
            return Ok(());
        };
        if self.current.as_ref().is_some_and(|(s, _, _)| *s == first) {
            self.current = None;
        }
        let path = self.path(first);
        fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        self.segments.remove(&first);
        Ok(())
    }

    /// Syncs the current segment (at shutdown).
    pub fn sync(&self) -> Result<(), StorageError> {
        if let Some((segment, file, _)) = &self.current {
            file.sync_data()
                .map_err(|e| io_error(&self.path(*segment), e))?;
        }
        Ok(())
    }

    /// The last sequence number stored in the log.
    pub fn last_seq(&self) -> u64 {
        self.segments.values().map(|s| s.last).max().unwrap_or(0)
    }

    /// fsyncs issued by appends (`durability = "flush"`).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// How many segment files there are.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }
}

/// The records of a segment's bytes: (offset, payload), or an error at a torn or corrupt one.
struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = (usize, Result<&'a [u8], String>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at >= self.bytes.len() {
            return None;
        }
        let at = self.at;
        let rest = &self.bytes[at..];
        let frame = (|| {
            let header = rest.get(..HEADER).ok_or("a torn record header")?;
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
            let payload = rest.get(HEADER..HEADER + len).ok_or("a torn record")?;
            if crc32fast::hash(payload) != crc {
                return Err("a record whose checksum does not match");
            }
            Ok(payload)
        })();
        match frame {
            Ok(payload) => {
                self.at = at + HEADER + payload.len();
                Some((at, Ok(payload)))
            }
            Err(e) => {
                self.done = true;
                Some((at, Err(format!("{e} at byte {at}"))))
            }
        }
    }
}

fn payload_seqs(payload: &[u8]) -> Result<(u64, u64), String> {
    let header = payload
        .get(..PAYLOAD_HEADER)
        .ok_or("a record shorter than its header")?;
    let first = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
    let last = u64::from_be_bytes(header[8..].try_into().expect("8 bytes"));
    Ok((first, last))
}

/// A record's events with their places; `base` is the payload's offset in its segment.
fn decode_events(
    payload: &[u8],
    segment: u64,
    base: u64,
) -> Result<Vec<(StoredEvent, Place)>, String> {
    let json = &payload[PAYLOAD_HEADER..];
    let raw: Vec<&RawValue> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    raw.into_iter()
        .map(|one| {
            let event: StoredEvent = serde_json::from_str(one.get()).map_err(|e| e.to_string())?;
            let start = one.get().as_ptr() as usize - payload.as_ptr() as usize;
            let place = Place {
                seq: event.seq,
                segment,
                offset: base + start as u64,
                len: one.get().len() as u32,
            };
            Ok((event, place))
        })
        .collect()
}

/// Where each uncovered event of each chat is, oldest first: a conversation that starts reads
/// only its own events.
#[derive(Debug, Default)]
pub(super) struct UncoveredIndex {
    chats: HashMap<ConversationKey, Vec<Place>>,
}

impl UncoveredIndex {
    pub fn add(&mut self, conversation: &ConversationKey, place: Place) {
        match self.chats.get_mut(conversation) {
            Some(events) => events.push(place),
            None => {
                self.chats.insert(conversation.clone(), vec![place]);
            }
        }
    }

    /// A snapshot covers the chat's events up to `applied`.
    pub fn covered(&mut self, conversation: &ConversationKey, applied: u64) {
        if let Some(events) = self.chats.get_mut(conversation) {
            events.retain(|place| place.seq > applied);
            if events.is_empty() {
                self.chats.remove(conversation);
            }
        }
    }

    /// The chat's first uncovered event.
    pub fn first(&self, conversation: &ConversationKey) -> Option<u64> {
        self.chats.get(conversation)?.first().map(|place| place.seq)
    }

    /// The chat's events up to `through` are now in sled (segment 0).
    pub fn set_aside(&mut self, conversation: &ConversationKey, through: u64) {
        for place in self.chats.get_mut(conversation).into_iter().flatten() {
            if place.seq <= through {
                *place = Place {
                    seq: place.seq,
                    segment: 0,
                    offset: 0,
                    len: 0,
                };
            }
        }
    }

    /// Where the chat's events after `after` are, oldest first.
    pub fn after(&self, conversation: &ConversationKey, after: u64) -> Vec<Place> {
        self.chats
            .get(conversation)
            .into_iter()
            .flatten()
            .filter(|place| place.seq > after)
            .copied()
            .collect()
    }

    /// How many events are indexed.
    pub fn events(&self) -> usize {
        self.chats.values().map(Vec::len).sum()
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.events"))
}

/// Reads the events at `places` from the segments in `dir`, in order. Needs no [`EventLog`]:
/// written records never change, so readers need not wait for the writer (nor its fsync). A
/// segment removed meanwhile is an error; under the log's lock none is.
pub fn read_events(dir: &Path, places: &[Place]) -> Result<Vec<StoredEvent>, StorageError> {
    let mut open: Option<(u64, File)> = None;
    let mut events = Vec::with_capacity(places.len());
    for place in places {
        let path = segment_path(dir, place.segment);
        if open.as_ref().is_none_or(|(s, _)| *s != place.segment) {
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            open = Some((place.segment, file));
        }
        let (_, file) = open.as_ref().expect("just opened");
        let mut json = vec![0; place.len as usize];
        file.read_exact_at(&mut json, place.offset)
            .map_err(|e| io_error(&path, e))?;
        let event: StoredEvent = serde_json::from_slice(&json).map_err(|e| io_error(&path, e))?;
        if event.seq != place.seq {
            return Err(io_error(
                &path,
                format!("event {} where {} was indexed", event.seq, place.seq),
            ));
        }
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::{AccountId, LineSource};

    fn stored(seq: u64, user: &str) -> StoredEvent {
        StoredEvent {
            v: super::super::JOURNAL_FORMAT_VERSION,
            seq,
            conversation: ConversationKey::new(
                AccountId::parse("demo").unwrap(),
                LineSource::user(user).unwrap(),
            ),
            received_at_ms: 1_000 + seq as i64,
            event: RawValue::from_string(format!(r#"{{"text":"m{seq}, \"quoted\" [1]"}}"#))
                .unwrap(),
        }
    }

    fn seqs(log: &EventLog) -> Vec<u64> {
        let records = log.records_from(0).unwrap();
        records
            .into_iter()
            .flat_map(|r| r.events)
            .map(|(e, _)| e.seq)
            .collect()
    }

    #[test]
    fn each_event_is_read_alone_where_its_place_says_and_places_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), false, SEGMENT_BYTES).unwrap();
        let first = log.append(&[stored(1, "Ua"), stored(2, "Ub")], 0).unwrap();
        let second = log.append(&[stored(3, "Ua")], 0).unwrap();
        let read = log.read(&[first[0], second[0]]).unwrap();
        assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(read[1].event.get(), stored(3, "Ua").event.get());
        let found: Vec<Place> = log
            .records_from(0)
            .unwrap()
            .into_iter()
            .flat_map(|r| r.events)
            .map(|(_, place)| place)
            .collect();
        assert_eq!(
            found,
            [first.clone(), second.clone()].concat(),
            "the same places when read back"
        );
        let wrong = Place {
            seq: 2,
            ..second[0]
        };
        assert!(log.read(&[wrong]).is_err(), "a wrong place is an error");
    }

    #[test]
    fn a_torn_record_is_cut_at_open_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = EventLog::open(dir.path(), true, SEGMENT_BYTES).unwrap();
            log.append(&[stored(1, "Ua"), stored(2, "Ub")], 0).unwrap();
            log.append(&[stored(3, "Ua")], 0).unwrap();
            log.append(&[stored(4, "Ua")], 0).unwrap();
        }
        let segment = dir.path().join(format!("{:020}.events", 1));
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(file);
        let mut log = EventLog::open(dir.path(), true, SEGMENT_BYTES).unwrap();
        assert_eq!(seqs(&log), [1, 2, 3, 4], "the torn record went");
        assert_eq!(log.last_seq(), 4);
        log.append(&[stored(5, "Ub")], 0).unwrap();
        drop(log);
        let log = EventLog::open(dir.path(), true, SEGMENT_BYTES).unwrap();
        assert_eq!(
            seqs(&log),
            [1, 2, 3, 4, 5],
            "nothing cut when nothing is torn"
        );
    }

    #[test]
    fn a_batch_sled_refused_is_removed_and_its_numbers_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), false, SEGMENT_BYTES).unwrap();
        log.append(&[stored(1, "Ua")], 0).unwrap();
        let failed = log.append(&[stored(2, "Ua"), stored(3, "Ub")], 0).unwrap();
        log.undo_last(&failed).unwrap();
        assert_eq!(seqs(&log), [1]);
        let again = log.append(&[stored(2, "Ub")], 0).unwrap();
        assert_eq!(
            log.read(&again).unwrap()[0].conversation,
            stored(2, "Ub").conversation
        );
        assert_eq!(seqs(&log), [1, 2]);
    }

    #[test]
    fn segments_rotate_by_size_and_age_and_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), false, 1).unwrap();
        for seq in 1..=3 {
            log.append(&[stored(seq, "Ua")], 0).unwrap();
        }
        assert_eq!(log.segments(), 3, "one per record past 1 byte");
        // Received at 1,001, 1,002 and 1,003 (see `stored`).
        assert_eq!(log.oldest(), Some((1, 1, 1_001)));
        log.remove_oldest().unwrap();
        assert_eq!(log.oldest(), Some((2, 2, 1_002)));
        assert_eq!(seqs(&log), [2, 3]);
        log.remove_oldest().unwrap();
        log.remove_oldest().unwrap();
        assert_eq!(log.segments(), 0, "the current one too");
        assert_eq!(log.oldest(), None);
        log.append(&[stored(4, "Ua")], 0).unwrap();
        assert_eq!(seqs(&log), [4]);

        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), false, SEGMENT_BYTES).unwrap();
        log.append(&[stored(1, "Ua")], 10).unwrap();
        log.append(&[stored(2, "Ua")], 10).unwrap();
        assert_eq!(log.segments(), 1, "both within the retention of the first");
        log.append(&[stored(20, "Ua")], 10).unwrap();
        assert_eq!(
            log.segments(),
            2,
            "the first segment's first event is 19 ms old"
        );
    }
}
