//! The audit trail: an append-only log of segment files, group-committed by the writer, with
//! look-ups by identifier and by trace id from a per-segment index built off the commit path.
//!
//! Why not the LSM tree: an event and its two index entries were three memtable inserts, two
//! of them at random keys, then a flush and compactions of the same bytes; the profile put
//! over half a core there, and the memtable flushes stalled the commit behind table
//! write-back (docs/PERFORMANCE.md). Here an event is one sequential write of its bytes into
//! the batch's buffer, and the batch is one `pwrite` and one `fdatasync`.
//!
//! | file (in `<store>/audit/`) | what |
//! | --- | --- |
//! | `<first seq, 20 digits>.log` | header (`OTPDAUD1`, first sequence number), then records: length (u32 LE) ‖ CRC-32 of the rest (u32 LE) ‖ sequence (u64 LE) ‖ the event as `codec::encode_audit_into` writes it |
//! | `<first seq>.idx` | a sealed segment's index: header (`OTPDAIX1`, counts, oldest and newest event time), then the identifier entries, then the trace entries, each `prefix (16 B) ‖ position (u32 LE)`, sorted |
//!
//! Invariants:
//! - Only the writer appends, and only to the last segment (the active one). An event is
//!   visible to readers once it is durable *and* the batch's other writes are committed
//!   ([`Trail::publish`]), so a reader never sees an event whose subject key is not yet in
//!   the store, and never one that was not acknowledged.
//! - A segment holds the events of one hour of event time, up to `segment_bytes`; a new hour
//!   or a full segment seals it. Retention deletes whole sealed segments whose newest event
//!   is past the cutoff, so an event outlives its lifetime by at most an hour.
//! - A sealed segment's index is written by the indexer thread (sort, write, fsync, rename);
//!   until then, and for the active segment, the index is in memory. A segment whose index
//!   file is missing or damaged is indexed again from its records on open.
//! - Opening reads the active segment to its end and cuts a torn tail (a record whose length
//!   or CRC does not hold): no acknowledged event is in a torn tail, since each was fsync'd
//!   before its answer.
//! - The active segment's file is zero-filled ahead of its records, [`PREALLOC`] at a time,
//!   and sealing cuts it to its records. A commit then overwrites blocks that already exist
//!   and its `fdatasync` writes data only: appending made every one also write the inode
//!   (the file's size) and the allocation, one more device round trip per commit
//!   (docs/PERFORMANCE.md). A zero tail is free space, not a torn record: no record starts
//!   with a zero length and a zero CRC.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use otpd_actors::ports::{AuditEvent, StoreError};
use otpd_actors::rules::clock::Timestamp;
use parking_lot::{Mutex, RwLock};

use super::codec::{corrupt, decode_audit, encode_audit_into, trace_prefix, unavailable};

const LOG_MAGIC: &[u8; 8] = b"OTPDAUD1";
const IDX_MAGIC: &[u8; 8] = b"OTPDAIX1";
/// Magic and first sequence number.
const LOG_HEADER: u64 = 16;
/// Magic, first sequence, events, oldest, newest, identifier entries, trace entries, last sequence.
const IDX_HEADER: u64 = 8 * 8;
/// Length, CRC, sequence.
const RECORD_HEADER: usize = 16;
const ENTRY: usize = 20;
/// No event is anywhere near this; a length above it is a torn or damaged record.
const MAX_RECORD: usize = 1 << 20;
const HOUR_MS: u64 = 3_600_000;
/// Default size at which the active segment is sealed.
pub(super) const SEGMENT_BYTES: u64 = 32 << 20;
/// How far ahead of its records the active segment is zero-filled.
const PREALLOC: u64 = 1 << 20;

/// Which index a look-up uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    Identifier([u8; 16]),
    Trace([u8; 16]),
}

/// One index entry: a prefix (identifier hash, or BLAKE3 of the trace id) and where the
/// record starts in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    prefix: [u8; 16],
    pos: u32,
}

enum Index {
    /// The active segment's, and a sealed one's until its file is written; in append order.
    Memory { ident: Vec<Entry>, trace: Vec<Entry> },
    /// A sealed segment's index file, read by binary search.
    Disk { file: File, ident: u64, trace: u64 },
}

/// What readers know of a segment: its published length and events, and its index.
struct Meta {
    /// Bytes of published records (the header included).
    len: u64,
    events: u64,
    oldest: Option<Timestamp>,
    newest: Option<Timestamp>,
    last_seq: Option<u64>,
    index: Index,
}

pub(super) struct Segment {
    first_seq: u64,
    log: PathBuf,
    file: File,
    meta: RwLock<Meta>,
}

impl Segment {
    fn idx_path(&self) -> PathBuf {
        self.log.with_extension("idx")
    }

    /// The positions of the records under `key`, oldest first.
    fn positions(&self, key: Key) -> Result<Vec<u32>, StoreError> {
        let meta = self.meta.read();
        let (identifiers, prefix) = match key {
            Key::Identifier(p) => (true, p),
            Key::Trace(p) => (false, p),
        };
        match &meta.index {
            Index::Memory { ident, trace } => {
                let entries = if identifiers { ident } else { trace };
                Ok(entries.iter().filter(|e| e.prefix == prefix).map(|e| e.pos).collect())
            }
            Index::Disk { file, ident, trace } => {
                let (start, count) =
                    if identifiers { (IDX_HEADER, *ident) } else { (IDX_HEADER + *ident * ENTRY as u64, *trace) };
                let read = |i: u64| -> Result<Entry, StoreError> {
                    let mut b = [0u8; ENTRY];
                    file.read_exact_at(&mut b, start + i * ENTRY as u64).map_err(unavailable)?;
                    Ok(entry_of(&b))
                };
                // The first entry not below `prefix`, then the first above it.
                let bound = |above: bool| -> Result<u64, StoreError> {
                    let (mut lo, mut hi) = (0, count);
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        let p = read(mid)?.prefix;
                        if p < prefix || (above && p == prefix) {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    Ok(lo)
                };
                let (lo, hi) = (bound(false)?, bound(true)?);
                let mut bytes = vec![0u8; (hi - lo) as usize * ENTRY];
                file.read_exact_at(&mut bytes, start + lo * ENTRY as u64).map_err(unavailable)?;
                Ok(bytes.chunks_exact(ENTRY).map(|c| entry_of(c).pos).collect())
            }
        }
    }

    /// The record at `pos`: its sequence number and event bytes.
    fn read(&self, pos: u32) -> Result<(u64, Vec<u8>), StoreError> {
        let mut head = [0u8; RECORD_HEADER];
        self.file.read_exact_at(&mut head, u64::from(pos)).map_err(unavailable)?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD {
            return Err(corrupt("audit record longer than any event"));
        }
        let mut body = vec![0u8; len];
        self.file.read_exact_at(&mut body, u64::from(pos) + RECORD_HEADER as u64).map_err(unavailable)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[8..]);
        crc.update(&body);
        if crc.finalize() != u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) {
            return Err(corrupt("audit record fails its CRC"));
        }
        Ok((u64::from_le_bytes(head[8..].try_into().expect("8 bytes")), body))
    }
}

fn entry_of(b: &[u8]) -> Entry {
    Entry {
        prefix: b[..16].try_into().expect("16 bytes"),
        pos: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
    }
}

/// Events staged by one batch, in sequence order, as their records' bytes.
#[derive(Default)]
pub(super) struct Staged {
    bytes: Vec<u8>,
    records: Vec<StagedRecord>,
}

struct StagedRecord {
    /// Where the record starts in `bytes`.
    start: usize,
    seq: u64,
    at: Timestamp,
    ident: Option<[u8; 16]>,
    trace: [u8; 16],
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Stages `event` under `seq`, its personal fields already taken out and `sealed`.
    pub fn push_event(&mut self, seq: u64, event: &AuditEvent, sealed: Option<&[u8]>) -> Result<(), StoreError> {
        self.frame(seq, event, |out| encode_audit_into(event, sealed, out))
    }

    /// Stages `event` under `seq` as the record bytes `payload` (an older store's, moved as they are).
    pub fn push(&mut self, seq: u64, event: &AuditEvent, payload: &[u8]) {
        let framed = self.frame(seq, event, |out| {
            out.extend_from_slice(payload);
            Ok(())
        });
        framed.expect("copying bytes cannot fail");
    }

    /// Appends a record: its header, then what `write` appends, then the header filled in.
    fn frame(
        &mut self,
        seq: u64,
        event: &AuditEvent,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; RECORD_HEADER]);
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        let body = start + RECORD_HEADER;
        let len = (self.bytes.len() - body) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&self.bytes[body..]);
        let head = &mut self.bytes[start..body];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        head[8..].copy_from_slice(&seq.to_le_bytes());
        self.records.push(StagedRecord {
            start,
            seq,
            at: event.at,
            ident: event.ident_hash.map(|h| h.0),
            trace: trace_prefix(event.trace_id.as_str()),
        });
        Ok(())
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }

    fn end_of(&self, i: usize) -> usize {
        self.records.get(i + 1).map_or(self.bytes.len(), |r| r.start)
    }
}

/// What [`Trail::write`] made durable, for [`Trail::publish`] (or [`Trail::rollback`]).
#[must_use]
pub(super) struct Written {
    parts: Vec<Part>,
    /// Segments this write sealed, for the indexer once published.
    sealed: Vec<Arc<Segment>>,
}

struct Part {
    segment: Arc<Segment>,
    from: u64,
    records: std::ops::Range<usize>,
}

/// The writer's side: the active segment's file and where the next record goes.
struct Appender {
    active: Arc<Segment>,
    file: File,
    len: u64,
    /// The hour (of event time) of the active segment's events; `None` while it is empty.
    hour: Option<u64>,
    next_seq: u64,
    /// The file's length: records up to `len`, zeros after.
    filled: u64,
}

/// The indexer thread's queue and handle.
type Indexer = (SyncSender<Arc<Segment>>, JoinHandle<()>);

/// Segments holding records under a key, each with the records' positions (oldest first).
pub(super) type Found = Vec<(Arc<Segment>, Vec<u32>)>;

pub(super) struct Trail {
    dir: PathBuf,
    segment_bytes: u64,
    /// Oldest first; the last is the active one.
    segments: RwLock<Vec<Arc<Segment>>>,
    appender: Mutex<Appender>,
    indexer: Mutex<Option<Indexer>>,
}

impl Trail {
    /// Opens (creating if needed) the trail in `dir`; an empty trail's first event gets
    /// `first_seq`. Cuts a torn tail of the active segment, and indexes sealed segments whose
    /// index file is missing (in the background).
    pub fn open(dir: &Path, first_seq: u64, segment_bytes: u64) -> Result<Arc<Trail>, StoreError> {
        let io = |e: std::io::Error| unavailable(format!("{}: {e}", dir.display()));
        crate::private_fs::create_dir(dir).map_err(io)?;
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let ext = path.extension().and_then(|e| e.to_str());
            let first = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
            match (ext, first) {
                (Some("log"), Some(first)) => logs.push((first, path)),
                // Left by a crash while an index was written, or by a deletion racing the indexer.
                (Some("tmp"), _) => std::fs::remove_file(&path).map_err(io)?,
                (Some("idx"), _) if !path.with_extension("log").exists() => std::fs::remove_file(&path).map_err(io)?,
                _ => {}
            }
        }
        logs.sort();
        let mut segments = Vec::with_capacity(logs.len() + 1);
        let mut to_index = Vec::new();
        let last = logs.len().checked_sub(1);
        let mut next_seq = first_seq;
        for (i, (first, path)) in logs.into_iter().enumerate() {
            let active = Some(i) == last;
            let (segment, last_seq, indexed) = open_segment(first, path, active)?;
            if let Some(s) = last_seq {
                next_seq = s + 1;
            } else {
                next_seq = next_seq.max(first);
            }
            let segment = Arc::new(segment);
            if !active && !indexed {
                to_index.push(segment.clone());
            }
            segments.push(segment);
        }
        let (active, file, len, hour, filled) = match segments.last() {
            Some(seg) => {
                let file = OpenOptions::new().write(true).open(&seg.log).map_err(io)?;
                let filled = file.metadata().map_err(io)?.len();
                let meta = seg.meta.read();
                let hour = meta.oldest.map(|t| t.as_millis() / HOUR_MS);
                let len = meta.len;
                drop(meta);
                (seg.clone(), file, len, hour, filled)
            }
            None => {
                let (seg, file) = create_segment(dir, next_seq)?;
                segments.push(seg.clone());
                (seg, file, LOG_HEADER, None, LOG_HEADER)
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let indexer = super::spawn_background("otpd-audit-index", move || index_segments(rx)).map_err(unavailable)?;
        for seg in to_index {
            let _ = tx.send(seg);
        }
        Ok(Arc::new(Trail {
            dir: dir.to_owned(),
            segment_bytes: segment_bytes.max(LOG_HEADER + 1),
            segments: RwLock::new(segments),
            appender: Mutex::new(Appender { active, file, len, hour, next_seq, filled }),
            indexer: Mutex::new(Some((tx, indexer))),
        }))
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.appender.lock().next_seq
    }

    /// Writes `staged` to the active segment (sealing it and starting another where an hour
    /// ends or it is full) and makes it durable. Not visible until [`Trail::publish`].
    pub fn write(&self, staged: &Staged) -> Result<Written, StoreError> {
        let mut app = self.appender.lock();
        let mut written = Written { parts: Vec::new(), sealed: Vec::new() };
        let mut i = 0;
        while i < staged.records.len() {
            let (first, from) = (i, app.len);
            let mut end = app.len;
            while i < staged.records.len() {
                let r = &staged.records[i];
                let size = (staged.end_of(i) - r.start) as u64;
                let hour = r.at.as_millis() / HOUR_MS;
                if end > LOG_HEADER && (app.hour != Some(hour) || end + size > self.segment_bytes) {
                    break;
                }
                app.hour = Some(hour);
                end += size;
                i += 1;
            }
            if i > first {
                let bytes = &staged.bytes[staged.records[first].start..staged.end_of(i - 1)];
                app.file.write_all_at(bytes, from).map_err(unavailable)?;
                if end > app.filled {
                    // The next `PREALLOC` (within the segment's size), made durable with the records.
                    let to = (end + PREALLOC).min(self.segment_bytes).max(end);
                    write_zeros(&app.file, end, to).map_err(unavailable)?;
                    app.filled = to;
                }
                app.len = end;
                written.parts.push(Part { segment: app.active.clone(), from, records: first..i });
            }
            if i < staged.records.len() {
                // Seal: cut to its records, made durable (the size too) before the next starts.
                app.file.set_len(app.len).map_err(unavailable)?;
                app.file.sync_all().map_err(unavailable)?;
                let (seg, file) = create_segment(&self.dir, staged.records[i].seq)?;
                written.sealed.push(std::mem::replace(&mut app.active, seg.clone()));
                app.file = file;
                app.len = LOG_HEADER;
                app.filled = LOG_HEADER;
                app.hour = None;
                self.segments.write().push(seg);
            }
        }
        app.file.sync_data().map_err(unavailable)?;
        if let Some(last) = staged.records.last() {
            app.next_seq = app.next_seq.max(last.seq + 1);
        }
        Ok(written)
    }

    /// Makes written events visible to readers; hands the segments the write sealed to the
    /// indexer.
    pub fn publish(&self, written: Written, staged: &Staged) {
        for part in &written.parts {
            let mut meta = part.segment.meta.write();
            for i in part.records.clone() {
                let r = &staged.records[i];
                let pos = (part.from + (r.start - staged.records[part.records.start].start) as u64) as u32;
                if let Index::Memory { ident, trace } = &mut meta.index {
                    if let Some(prefix) = r.ident {
                        ident.push(Entry { prefix, pos });
                    }
                    trace.push(Entry { prefix: r.trace, pos });
                }
                meta.events += 1;
                meta.oldest = Some(meta.oldest.map_or(r.at, |o| o.min(r.at)));
                meta.newest = Some(meta.newest.map_or(r.at, |n| n.max(r.at)));
                meta.last_seq = Some(r.seq);
            }
            let last = part.records.end - 1;
            meta.len = part.from + (staged.end_of(last) - staged.records[part.records.start].start) as u64;
        }
        self.seal(written.sealed);
    }

    /// Undoes a write whose batch failed to commit elsewhere: the bytes are cut off again, so
    /// a later open does not find events that were never acknowledged.
    pub fn rollback(&self, written: Written) {
        let mut app = self.appender.lock();
        for part in written.parts.iter().rev() {
            let cut = || -> std::io::Result<()> {
                let f = OpenOptions::new().write(true).open(&part.segment.log)?;
                f.set_len(part.from)?;
                f.sync_all()
            };
            if let Err(e) = cut() {
                tracing::error!(error = %e, segment = %part.segment.log.display(), "could not cut a failed batch's audit events");
            }
            if Arc::ptr_eq(&part.segment, &app.active) {
                app.len = app.len.min(part.from);
                app.filled = part.from;
            }
        }
        // The sequence numbers stay taken: a gap is harmless, a number used twice is not.
        drop(app);
        self.seal(written.sealed);
    }

    fn seal(&self, sealed: Vec<Arc<Segment>>) {
        if sealed.is_empty() {
            return;
        }
        if let Some((tx, _)) = self.indexer.lock().as_ref() {
            for seg in sealed {
                let _ = tx.send(seg);
            }
        }
    }

    /// Every segment's records under `key`, newest segment first, each segment's positions
    /// oldest first.
    pub fn lookup(&self, key: Key) -> Result<Found, StoreError> {
        let segments = self.segments.read().clone();
        let mut out = Vec::new();
        for seg in segments.into_iter().rev() {
            let positions = seg.positions(key)?;
            if !positions.is_empty() {
                out.push((seg, positions));
            }
        }
        Ok(out)
    }

    /// When the oldest event held was written.
    pub fn oldest_event(&self) -> Option<Timestamp> {
        self.segments.read().iter().find_map(|s| s.meta.read().oldest)
    }

    /// Deletes the segments whose every event was written before `cutoff` (the active one
    /// too, which is sealed first); returns how many events went.
    pub fn expire(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let mut app = self.appender.lock();
        let mut gone = 0;
        loop {
            let oldest = self.segments.read().first().cloned();
            let Some(seg) = oldest else { break };
            let (events, newest) = {
                let m = seg.meta.read();
                (m.events, m.newest)
            };
            if events == 0 || newest.is_none_or(|n| n >= cutoff) {
                break;
            }
            // A batch written to it but not yet published (or rolled back) has newer events.
            // (A sealed segment's file holds its records only; the active one's, zeros after.)
            let active = Arc::ptr_eq(&seg, &app.active);
            let written = if active { app.len } else { seg.file.metadata().map_err(unavailable)?.len() };
            if written != seg.meta.read().len {
                break;
            }
            if active {
                let (next, file) = create_segment(&self.dir, app.next_seq)?;
                self.segments.write().push(next.clone());
                app.active = next;
                app.file = file;
                app.len = LOG_HEADER;
                app.filled = LOG_HEADER;
                app.hour = None;
            }
            self.segments.write().remove(0);
            for path in [seg.log.clone(), seg.idx_path()] {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(unavailable(e)),
                    _ => {}
                }
            }
            gone += events;
        }
        if gone > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(gone)
    }

    /// Every segment and its published length: what a backup copies (see [`copy_view`]).
    /// Taken before the backup's snapshot of the LSM tree, so every event in it has its key
    /// there.
    pub fn view(&self) -> Vec<(Arc<Segment>, u64)> {
        self.segments.read().iter().map(|s| (s.clone(), s.meta.read().len)).collect()
    }

    /// Stops the indexer, after the segments queued for it are indexed.
    pub fn close(&self) {
        if let Some((tx, handle)) = self.indexer.lock().take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    #[cfg(test)]
    fn wait_indexed(&self) {
        self.close();
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        self.close();
    }
}

fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| unavailable(format!("{}: {e}", dir.display())))
}

fn log_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

fn segment_header(first_seq: u64) -> [u8; LOG_HEADER as usize] {
    let mut header = [0u8; LOG_HEADER as usize];
    header[..8].copy_from_slice(LOG_MAGIC);
    header[8..].copy_from_slice(&first_seq.to_le_bytes());
    header
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, mut from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while from < to {
        let n = (to - from).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], from)?;
        from += n;
    }
    Ok(())
}

/// A new, empty, durable segment whose first event will be `first_seq`.
fn create_segment(dir: &Path, first_seq: u64) -> Result<(Arc<Segment>, File), StoreError> {
    let path = dir.join(log_name(first_seq));
    let io = |e: std::io::Error| unavailable(format!("{}: {e}", path.display()));
    let mut file = create_private(&path).map_err(io)?;
    file.write_all(&segment_header(first_seq)).map_err(io)?;
    file.sync_all().map_err(io)?;
    sync_dir(dir)?;
    let read = File::open(&path).map_err(io)?;
    let meta = Meta {
        len: LOG_HEADER,
        events: 0,
        oldest: None,
        newest: None,
        last_seq: None,
        index: Index::Memory { ident: Vec::new(), trace: Vec::new() },
    };
    Ok((Arc::new(Segment { first_seq, log: path, file: read, meta: RwLock::new(meta) }), file))
}

/// Opens a segment: from its index file if it is sealed and has a sound one, else by reading
/// its records (cutting a torn tail off the active one). Returns it, its last sequence number,
/// and whether its index is on disk.
fn open_segment(first_seq: u64, log: PathBuf, active: bool) -> Result<(Segment, Option<u64>, bool), StoreError> {
    let io = |e: std::io::Error| unavailable(format!("{}: {e}", log.display()));
    let file = File::open(&log).map_err(io)?;
    if !active && let Some((meta, last_seq)) = read_idx(&log.with_extension("idx"), first_seq) {
        return Ok((Segment { first_seq, log, file, meta: RwLock::new(meta) }, last_seq, true));
    }
    let mut bytes = std::fs::read(&log).map_err(io)?;
    if active && bytes.len() < LOG_HEADER as usize {
        // A crash while the segment was being created, before its header was durable.
        bytes = segment_header(first_seq).to_vec();
        let f = OpenOptions::new().write(true).open(&log).map_err(io)?;
        f.set_len(0).map_err(io)?;
        f.write_all_at(&bytes, 0).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    if bytes.len() < LOG_HEADER as usize || &bytes[..8] != LOG_MAGIC {
        return Err(corrupt(format!("{}: not an audit segment", log.display())));
    }
    let mut meta = Meta {
        len: LOG_HEADER,
        events: 0,
        oldest: None,
        newest: None,
        last_seq: None,
        index: Index::Memory { ident: Vec::new(), trace: Vec::new() },
    };
    let mut last_seq = None;
    let mut pos = LOG_HEADER as usize;
    while let Some(head) = bytes.get(pos..pos + RECORD_HEADER) {
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let Some(body) = bytes.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len).filter(|_| len <= MAX_RECORD) else {
            break;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[8..]);
        crc.update(body);
        if crc.finalize() != u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) {
            break;
        }
        let (event, _) = decode_audit(body)?;
        if let Index::Memory { ident, trace } = &mut meta.index {
            if let Some(h) = event.ident_hash {
                ident.push(Entry { prefix: h.0, pos: pos as u32 });
            }
            trace.push(Entry { prefix: trace_prefix(event.trace_id.as_str()), pos: pos as u32 });
        }
        meta.events += 1;
        meta.oldest = Some(meta.oldest.map_or(event.at, |o| o.min(event.at)));
        meta.newest = Some(meta.newest.map_or(event.at, |n| n.max(event.at)));
        last_seq = Some(u64::from_le_bytes(head[8..].try_into().expect("8 bytes")));
        meta.last_seq = last_seq;
        pos += RECORD_HEADER + len;
    }
    meta.len = pos as u64;
    // After the records: zeros are the active segment's room to grow, kept (or a sealed one's
    // whose cut to size a crash interrupted, cut); anything else is a torn write, cut from the
    // active segment and damage in a sealed one.
    let free = bytes[pos..].iter().all(|&b| b == 0);
    if pos < bytes.len() && !(free && active) {
        if !free && !active {
            return Err(corrupt(format!("{}: a sealed audit segment has a damaged record", log.display())));
        }
        if !free {
            tracing::warn!(
                segment = %log.display(),
                kept = pos,
                cut = bytes.len() - pos,
                "cutting the audit trail's torn tail (a write the crash interrupted, never acknowledged)"
            );
        }
        let f = OpenOptions::new().write(true).open(&log).map_err(io)?;
        f.set_len(pos as u64).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok((Segment { first_seq, log, file, meta: RwLock::new(meta) }, last_seq, false))
}

/// A sound index file's header and handle; `None` if it is missing, short or not one.
fn read_idx(path: &Path, first_seq: u64) -> Option<(Meta, Option<u64>)> {
    let file = File::open(path).ok()?;
    let mut h = [0u8; IDX_HEADER as usize];
    file.read_exact_at(&mut h, 0).ok()?;
    let word = |i: usize| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let (first, events, oldest, newest, ident, trace) = (word(1), word(2), word(3), word(4), word(5), word(6));
    let last_seq = word(7);
    let size = file.metadata().ok()?.len();
    if &h[..8] != IDX_MAGIC || first != first_seq || size != IDX_HEADER + (ident + trace) * ENTRY as u64 {
        return None;
    }
    let stamp = |t: u64| (events > 0).then(|| Timestamp::from_millis(t));
    let meta = Meta {
        len: std::fs::metadata(path.with_extension("log")).ok()?.len(),
        events,
        oldest: stamp(oldest),
        newest: stamp(newest),
        last_seq: (events > 0).then_some(last_seq),
        index: Index::Disk { file, ident, trace },
    };
    Some((meta, (events > 0).then_some(last_seq)))
}

/// The indexer thread: writes each sealed segment's index file, then reads it from there.
fn index_segments(rx: Receiver<Arc<Segment>>) {
    while let Ok(seg) = rx.recv() {
        if let Err(e) = write_idx(&seg) {
            tracing::error!(error = %e, segment = %seg.log.display(), "could not write an audit segment's index; it stays in memory");
        }
    }
}

fn write_idx(seg: &Segment) -> std::io::Result<()> {
    let (mut ident, mut trace, events, oldest, newest, last_seq) = {
        let m = seg.meta.read();
        let Index::Memory { ident, trace } = &m.index else { return Ok(()) };
        (ident.clone(), trace.clone(), m.events, m.oldest, m.newest, m.last_seq)
    };
    ident.sort_unstable();
    trace.sort_unstable();
    let mut out = Vec::with_capacity(IDX_HEADER as usize + (ident.len() + trace.len()) * ENTRY);
    out.extend_from_slice(IDX_MAGIC);
    for w in [
        seg.first_seq,
        events,
        oldest.map_or(0, |t| t.as_millis()),
        newest.map_or(0, |t| t.as_millis()),
        ident.len() as u64,
        trace.len() as u64,
        last_seq.unwrap_or(0),
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for e in ident.iter().chain(&trace) {
        out.extend_from_slice(&e.prefix);
        out.extend_from_slice(&e.pos.to_le_bytes());
    }
    let idx = seg.idx_path();
    let tmp = idx.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = create_private(&tmp)?;
    // In steps: ~9 MB in one burst stalled the commit path's fdatasync (crate::writeback).
    crate::writeback::write_in_steps(&mut f, &out)?;
    f.sync_all()?;
    if !seg.log.exists() {
        // Expired meanwhile.
        return std::fs::remove_file(&tmp);
    }
    std::fs::rename(&tmp, &idx)?;
    if let Some(dir) = idx.parent() {
        File::open(dir)?.sync_all()?;
    }
    let file = File::open(&idx)?;
    let mut m = seg.meta.write();
    m.index = Index::Disk { file, ident: ident.len() as u64, trace: trace.len() as u64 };
    Ok(())
}

/// Copies the published records of `view` (and each sealed segment's index file, if written)
/// into the directory `to`, without holding up the writer: sealed segments do not change, and
/// the active one only grows past the length in the view. Returns the bytes copied.
pub(super) fn copy_view(view: &[(Arc<Segment>, u64)], to: &Path) -> Result<u64, StoreError> {
    let io = |e: std::io::Error| unavailable(format!("{}: {e}", to.display()));
    crate::private_fs::create_dir(to).map_err(io)?;
    let mut bytes = 0;
    let mut buf = vec![0u8; 1 << 20];
    for (seg, len) in view {
        let name = seg.log.file_name().expect("a segment has a name");
        let mut out = create_private(&to.join(name)).map_err(io)?;
        let mut at = 0;
        while at < *len {
            let n = (len - at).min(buf.len() as u64) as usize;
            seg.file.read_exact_at(&mut buf[..n], at).map_err(unavailable)?;
            out.write_all(&buf[..n]).map_err(io)?;
            at += n as u64;
        }
        out.sync_all().map_err(io)?;
        bytes += len;
        if matches!(seg.meta.read().index, Index::Disk { .. }) {
            let idx = seg.idx_path();
            let target = to.join(idx.file_name().expect("an index has a name"));
            bytes += std::fs::copy(&idx, &target).map_err(io)?;
            File::open(&target).and_then(|f| f.sync_all()).map_err(io)?;
        }
    }
    sync_dir(to)?;
    Ok(bytes)
}

/// Reads the event at each position, newest first, until `visit` says stop.
pub(super) fn newest_first(
    found: &Found,
    mut visit: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    for (seg, positions) in found {
        for &pos in positions.iter().rev() {
            let (seq, bytes) = seg.read(pos)?;
            if !visit(seq, &bytes)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use otpd_actors::rules::audit::{Api, AuditOutcome, Step};
    use otpd_actors::rules::keys::IdentHash;

    use super::super::codec::encode_audit;
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            // Four events a minute: a new hour (and segment) every 240 events.
            at: Timestamp::from_millis(T0 + i * 15_000),
            trace_id: format!("trace-{}", i % 13).into(),
            api: Api::Login,
            step: Step::Done,
            outcome: AuditOutcome::Ok,
            message: Cow::Owned(format!("event {i}")),
            client_ip: None,
            user_agent: None,
            ident_hash: (!i.is_multiple_of(5)).then_some(IdentHash([(i % 7) as u8; 16])),
            user_id: None,
        }
    }

    /// Writes events `range` in batches of `batch`, as the writer does.
    fn append(trail: &Trail, range: std::ops::Range<u64>, batch: usize) -> Vec<(u64, AuditEvent)> {
        let mut out = Vec::new();
        let events: Vec<u64> = range.collect();
        for chunk in events.chunks(batch) {
            let mut staged = Staged::default();
            for (seq, &i) in (trail.next_seq()..).zip(chunk) {
                let e = event(i);
                staged.push(seq, &e, &encode_audit(&e, None).unwrap());
                out.push((seq, e));
            }
            let written = trail.write(&staged).unwrap();
            trail.publish(written, &staged);
        }
        out
    }

    /// What the trail answers for `key`: sequence numbers and events, newest first.
    fn answer(trail: &Trail, key: Key, limit: usize) -> Vec<(u64, AuditEvent)> {
        let mut out = Vec::new();
        newest_first(&trail.lookup(key).unwrap(), |seq, bytes| {
            out.push((seq, decode_audit(bytes)?.0));
            Ok(out.len() < limit)
        })
        .unwrap();
        out
    }

    /// The same from the list of everything written: the expected answer.
    fn model(all: &[(u64, AuditEvent)], key: Key, limit: usize) -> Vec<(u64, AuditEvent)> {
        all.iter()
            .rev()
            .filter(|(_, e)| match key {
                Key::Identifier(p) => e.ident_hash.map(|h| h.0) == Some(p),
                Key::Trace(p) => trace_prefix(e.trace_id.as_str()) == p,
            })
            .take(limit)
            .cloned()
            .collect()
    }

    fn keys() -> Vec<Key> {
        let mut keys: Vec<Key> = (0..8).map(|i| Key::Identifier([i; 16])).collect();
        keys.extend((0..14).map(|i| Key::Trace(trace_prefix(&format!("trace-{i}")))));
        keys
    }

    fn check(trail: &Trail, all: &[(u64, AuditEvent)], when: &str) {
        for key in keys() {
            for limit in [1, 7, 100_000] {
                assert_eq!(answer(trail, key, limit), model(all, key, limit), "{when}: {key:?}, limit {limit}");
            }
        }
    }

    #[test]
    fn look_ups_match_the_events_written_across_segments_indexes_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: size seals some, the hour others.
        let trail = Trail::open(dir.path(), 1, 8 * 1024).unwrap();
        let mut all = append(&trail, 0..1_000, 37);
        assert!(trail.segments.read().len() > 5, "several segments");
        check(&trail, &all, "in memory");
        trail.wait_indexed();
        let idx =
            std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "idx");
        assert_eq!(idx.count(), trail.segments.read().len() - 1, "every sealed segment has its index file");
        check(&trail, &all, "from index files");
        drop(trail);

        let trail = Trail::open(dir.path(), 1, 8 * 1024).unwrap();
        check(&trail, &all, "reopened");
        assert_eq!(trail.next_seq(), 1_001);
        all.extend(append(&trail, 1_000..1_100, 9));
        check(&trail, &all, "appended after reopening");
        drop(trail);

        // A lost or damaged index file is built again from the records.
        let mut idx: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().unwrap() == "idx")
            .collect();
        idx.sort();
        std::fs::remove_file(&idx[0]).unwrap();
        std::fs::write(&idx[1], b"OTPDAIX1 short").unwrap();
        let trail = Trail::open(dir.path(), 1, 8 * 1024).unwrap();
        check(&trail, &all, "indexed again");
        assert_eq!(trail.oldest_event(), Some(event(0).at));
    }

    #[test]
    fn a_torn_tail_is_cut_on_open_and_every_complete_record_stays() {
        let dir = tempfile::tempdir().unwrap();
        let trail = Trail::open(dir.path(), 1, SEGMENT_BYTES).unwrap();
        let mut all = append(&trail, 0..50, 10);
        let (log, full) = {
            let segments = trail.segments.read();
            let active = segments.last().unwrap();
            (active.log.clone(), active.meta.read().len)
        };
        drop(trail);
        // A crash mid-write, in the zeros after the records: the next record's header and half
        // its body, or a length past the end.
        let mut next = Staged::default();
        let e = event(50);
        next.push(51, &e, &encode_audit(&e, None).unwrap());
        for torn in [&next.bytes[..next.bytes.len() / 2], &next.bytes[..3], &[0xff; 40][..]] {
            let f = OpenOptions::new().write(true).open(&log).unwrap();
            f.write_all_at(torn, full).unwrap();
            drop(f);
            let trail = Trail::open(dir.path(), 1, SEGMENT_BYTES).unwrap();
            assert_eq!(std::fs::metadata(&log).unwrap().len(), full, "the torn bytes are cut");
            check(&trail, &all, "after a torn write");
            assert_eq!(trail.next_seq(), 51);
        }
        // A flipped byte in the last record fails its CRC: it is torn too, and nothing after it.
        let mut bytes = std::fs::read(&log).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x55;
        std::fs::write(&log, &bytes).unwrap();
        let trail = Trail::open(dir.path(), 1, SEGMENT_BYTES).unwrap();
        all.pop();
        check(&trail, &all, "after a damaged last record");
        all.extend(append(&trail, 60..70, 4));
        check(&trail, &all, "appended after the cut");
    }

    /// The file's length and the records' length of each segment, oldest first.
    fn lengths(trail: &Trail) -> Vec<(u64, u64)> {
        let segments = trail.segments.read();
        segments.iter().map(|s| (std::fs::metadata(&s.log).unwrap().len(), s.meta.read().len)).collect()
    }

    #[test]
    fn the_active_segment_is_zero_filled_ahead_and_sealed_ones_hold_their_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let size = 256 * 1024;
        let trail = Trail::open(dir.path(), 1, size).unwrap();
        // An hour ends after event 186: one sealed segment, and the active one.
        let mut all = append(&trail, 0..200, 10);
        let before = lengths(&trail);
        assert_eq!(before.len(), 2);
        assert_eq!(before[0].0, before[0].1, "the sealed segment is cut to its records");
        let (file, records) = before[1];
        assert_eq!(file, size.min(records + PREALLOC), "the active one is filled ahead, within its size");
        let log = trail.segments.read()[1].log.clone();
        assert!(std::fs::read(&log).unwrap()[records as usize..].iter().all(|&b| b == 0));
        drop(trail);

        // Reopened: the room is free space, not a torn tail.
        let trail = Trail::open(dir.path(), 1, size).unwrap();
        assert_eq!(lengths(&trail), before);
        check(&trail, &all, "reopened with zeros after the records");
        all.extend(append(&trail, 200..230, 10));
        check(&trail, &all, "appended into the room");
        trail.wait_indexed();
        drop(trail);

        // A crash between sealing and cutting to size: the sealed segment's zeros are cut.
        let sealed = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().unwrap() == "log")
            .min()
            .unwrap();
        let f = OpenOptions::new().write(true).open(&sealed).unwrap();
        f.set_len(before[0].0 + 4096).unwrap();
        drop(f);
        std::fs::remove_file(sealed.with_extension("idx")).unwrap();
        let trail = Trail::open(dir.path(), 1, size).unwrap();
        check(&trail, &all, "a sealed segment's zeros cut");
        assert_eq!(std::fs::metadata(&sealed).unwrap().len(), before[0].0);
    }

    #[test]
    fn a_segment_whose_creation_a_crash_cut_short_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let trail = Trail::open(dir.path(), 1, SEGMENT_BYTES).unwrap();
        let all = append(&trail, 0..30, 7);
        let next = trail.next_seq();
        drop(trail);
        for partial in [&b""[..], &b"OTPDA"[..]] {
            std::fs::write(dir.path().join(log_name(next)), partial).unwrap();
            let trail = Trail::open(dir.path(), 1, SEGMENT_BYTES).unwrap();
            check(&trail, &all, "after a cut-short creation");
            assert_eq!(trail.next_seq(), next);
            let more = append(&trail, 30..35, 5);
            assert_eq!(more[0].0, next);
            let mut with_more = all.clone();
            with_more.extend(more);
            check(&trail, &with_more, "appended to it");
            drop(trail);
            std::fs::remove_file(dir.path().join(log_name(next))).unwrap();
        }
    }

    #[test]
    fn a_rolled_back_write_is_never_seen_and_its_numbers_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let trail = Trail::open(dir.path(), 1, 4 * 1024).unwrap();
        let all = append(&trail, 0..20, 5);
        let mut staged = Staged::default();
        for (n, i) in (100..160).enumerate() {
            let e = event(i);
            staged.push(trail.next_seq() + n as u64, &e, &encode_audit(&e, None).unwrap());
        }
        let written = trail.write(&staged).unwrap();
        // Retention meanwhile: a segment with events not yet published is not deleted.
        let far = Timestamp::from_millis(T0 + 100 * HOUR_MS);
        let expired = trail.expire(far).unwrap();
        assert!(expired < all.len() as u64, "the segment being written keeps its published events: {expired}");
        trail.rollback(written);
        let all: Vec<_> = if expired > 0 { all[expired as usize..].to_vec() } else { all };
        check(&trail, &all, "rolled back");
        let more = append(&trail, 20..30, 5);
        assert!(more[0].0 > 80, "numbers after the rolled-back ones: {}", more[0].0);
        drop(trail);
        let trail = Trail::open(dir.path(), 1, 4 * 1024).unwrap();
        let all: Vec<_> = all.into_iter().chain(more).collect();
        check(&trail, &all, "reopened after a rollback");
    }

    #[test]
    fn expiry_deletes_whole_segments_past_the_cutoff_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let trail = Trail::open(dir.path(), 1, SEGMENT_BYTES).unwrap();
        // 1,000 events over ~4 hours: five segments, one per hour.
        let all = append(&trail, 0..1_000, 50);
        let hours = |t: u64| t / HOUR_MS;
        let cutoff = Timestamp::from_millis((hours(T0) + 2) * HOUR_MS);
        assert_eq!(trail.expire(Timestamp::from_millis(T0)).unwrap(), 0);
        let gone = trail.expire(cutoff).unwrap();
        let kept: Vec<_> = all.iter().filter(|(_, e)| e.at >= cutoff).cloned().collect();
        assert_eq!(gone as usize, all.len() - kept.len());
        check(&trail, &kept, "after expiry");
        assert_eq!(trail.oldest_event(), Some(kept[0].1.at));
        // Everything, the active segment too.
        assert_eq!(trail.expire(Timestamp::from_millis(T0 + 10 * HOUR_MS)).unwrap() as usize, kept.len());
        check(&trail, &[], "all expired");
        assert_eq!(trail.oldest_event(), None);
        let again = append(&trail, 2_000..2_010, 3);
        assert_eq!(again[0].0, 1_001, "numbering goes on");
        drop(trail);
        let trail = Trail::open(dir.path(), 1, SEGMENT_BYTES).unwrap();
        check(&trail, &again, "reopened after expiry");
    }
}
