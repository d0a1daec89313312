//! Filtering a `text/event-stream` answer event by event, as its chunks
//! pass: SSE framing (events, lines, fields, a leading byte-order mark) around
//! the JSON filtering of `lists`.

use super::{filter_document, invalid, Keep, ListError, PendingLists, Shape};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Filters a `text/event-stream` answer chunk by chunk.
///
/// Events end at a blank line; lines end in LF, CRLF or CR, and chunks may
/// split anywhere (a CR at the end of a chunk waits for the next byte, since
/// it may be half of a CRLF). An event whose `data:` lines form JSON holding a
/// response to a pending list request, with something removed, is re-emitted
/// with its other lines (`event:`, `id:`, `retry:`, comments) in order and the
/// filtered JSON in place of the first `data:` line: one `data:` line per line
/// of the JSON, which is the joined data with the removed items' bytes gone,
/// so a payload that came on several `data:` lines goes on as many or fewer
/// (each ended as the first one was). Every other event passes byte for byte,
/// as soon as it is complete. Ids stay pending for the whole stream, so a
/// repeated answer is filtered too.
///
/// Stricter than "invalid JSON for a pending id": a non-empty, non-blank data
/// payload that is not valid JSON (or repeats a key) is an error whatever its
/// id, since its id cannot be known and MCP sends only JSON-RPC in `data:`.
///
/// Any event (complete or not) longer than `max_event_bytes`, counting its
/// line ends, is [`ListError::TooLarge`], so the outcome does not depend on
/// how the stream was chunked. After an error the filter keeps returning it.
pub struct SseFilter {
    pending: PendingLists,
    max_event_bytes: usize,
    /// The current incomplete event.
    buf: Vec<u8>,
    /// Bytes of `buf` already split into lines.
    scanned: usize,
    /// Where the current line starts in `buf`.
    line_start: usize,
    /// Whether a leading byte-order mark may still be coming.
    at_stream_start: bool,
    finished: bool,
    removed: usize,
    failed: Option<ListError>,
}

impl SseFilter {
    /// A filter for one event stream answering the `pending` list requests.
    pub fn new(pending: PendingLists, max_event_bytes: usize) -> SseFilter {
        SseFilter {
            pending,
            max_event_bytes,
            buf: Vec::new(),
            scanned: 0,
            line_start: 0,
            at_stream_start: true,
            finished: false,
            removed: 0,
            failed: None,
        }
    }

    /// Feeds the next chunk; returns the bytes that can be emitted now (every
    /// event completed so far, filtered where needed).
    pub fn push(&mut self, chunk: &[u8], keep: &Keep) -> Result<Vec<u8>, ListError> {
        if self.finished {
            return Err(invalid("data after the end of the stream"));
        }
        self.buf.extend_from_slice(chunk);
        self.run(keep, false)
    }

    /// Ends the stream. A trailing event without its final blank line is
    /// still filtered and emitted in the shape it came (no blank line is
    /// added): a client that drops incomplete events still drops it, and one
    /// that dispatches it sees the filtered list.
    pub fn finish(&mut self, keep: &Keep) -> Result<Vec<u8>, ListError> {
        if self.finished && self.failed.is_none() {
            return Ok(Vec::new());
        }
        self.finished = true;
        self.run(keep, true)
    }

    /// How many items were removed so far.
    pub fn removed(&self) -> usize {
        self.removed
    }

    fn run(&mut self, keep: &Keep, at_end: bool) -> Result<Vec<u8>, ListError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.drain(keep, at_end);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn drain(&mut self, keep: &Keep, at_end: bool) -> Result<Vec<u8>, ListError> {
        let mut out = Vec::new();
        if self.at_stream_start {
            // The SSE parser drops a leading BOM; so must we, or a client
            // would read `data:` where we read a field named "\u{FEFF}data".
            let n = self.buf.len().min(BOM.len());
            if n < BOM.len() && self.buf.get(..n) == BOM.get(..n) && !at_end {
                return Ok(out);
            }
            if self.buf.starts_with(BOM) {
                out.extend_from_slice(BOM);
                self.buf.drain(..BOM.len());
            }
            self.at_stream_start = false;
        }

        let mut removed = 0;
        let mut event_start = 0;
        let mut i = self.scanned;
        let mut line_start = self.line_start;
        while let Some(&c) = self.buf.get(i) {
            let line_end = match c {
                b'\n' => i + 1,
                b'\r' => match self.buf.get(i + 1) {
                    Some(b'\n') => i + 2,
                    Some(_) => i + 1,
                    None if at_end => i + 1,
                    // Half of a CRLF, perhaps: wait for the next byte.
                    None => break,
                },
                _ => {
                    i += 1;
                    continue;
                }
            };
            if i == line_start {
                let event = self.buf.get(event_start..line_end).unwrap_or_default();
                let (bytes, n) = self.emit(event, keep)?;
                out.extend_from_slice(&bytes);
                removed += n;
                event_start = line_end;
            }
            line_start = line_end;
            i = line_end;
        }

        if at_end && event_start < self.buf.len() {
            let event = self.buf.get(event_start..).unwrap_or_default();
            let (bytes, n) = self.emit(event, keep)?;
            out.extend_from_slice(&bytes);
            removed += n;
            event_start = self.buf.len();
            i = event_start;
            line_start = event_start;
        }
        self.removed += removed;
        self.buf.drain(..event_start);
        self.scanned = i - event_start;
        self.line_start = line_start - event_start;
        if self.buf.len() > self.max_event_bytes {
            return Err(ListError::TooLarge);
        }
        Ok(out)
    }

    /// The bytes to emit for one event (complete, or trailing at the end)
    /// and the items removed from it.
    fn emit(&self, event: &[u8], keep: &Keep) -> Result<(Vec<u8>, usize), ListError> {
        if event.len() > self.max_event_bytes {
            return Err(ListError::TooLarge);
        }
        filter_event(event, &self.pending, keep)
    }
}

/// One line of an event: its content and its line end (empty for a last line
/// without one).
fn split_lines(event: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&c) = event.get(i) {
        let end = match c {
            b'\n' => i + 1,
            b'\r' if event.get(i + 1) == Some(&b'\n') => i + 2,
            b'\r' => i + 1,
            _ => {
                i += 1;
                continue;
            }
        };
        lines.push((
            event.get(start..i).unwrap_or_default(),
            event.get(i..end).unwrap_or_default(),
        ));
        start = end;
        i = end;
    }
    if start < event.len() {
        lines.push((event.get(start..).unwrap_or_default(), &[][..]));
    }
    lines
}

/// A line's field name and value, per the SSE spec: split at the first colon,
/// drop one leading space from the value. A comment has an empty name.
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&c| c == b':') {
        Some(colon) => {
            let name = line.get(..colon).unwrap_or_default();
            let value = line.get(colon + 1..).unwrap_or_default();
            (name, value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[][..]),
    }
}

/// Filters one event; returns the bytes to emit and the items removed.
fn filter_event(
    event: &[u8],
    pending: &PendingLists,
    keep: &Keep,
) -> Result<(Vec<u8>, usize), ListError> {
    let lines = split_lines(event);
    // The spec appends each data value plus LF and drops the last LF: a join.
    let values: Vec<&[u8]> = lines
        .iter()
        .map(|(content, _)| field(content))
        .filter(|(name, _)| *name == b"data")
        .map(|(_, value)| value)
        .collect();
    let payload = values.join(&b'\n');
    // No data, or only blank data (a priming event), is not a message.
    if payload
        .iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok((event.to_vec(), 0));
    }
    let Some((json, removed)) = filter_document(&payload, pending, keep, Shape::AnyMessages)?
    else {
        return Ok((event.to_vec(), 0));
    };
    let mut out = Vec::with_capacity(event.len());
    let mut data_written = false;
    for (content, line_end) in &lines {
        if field(content).0 == b"data" {
            if !data_written {
                // The joined data holds an LF only where two `data:` lines
                // met (a line holds no CR nor LF), and so does the JSON
                // spliced from it.
                let mut lines = json.split(|&c| c == b'\n').peekable();
                while let Some(line) = lines.next() {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(line);
                    // Only a last line of the stream has no end, and then
                    // it is the only `data:` line; still, never join two.
                    let end: &[u8] = if line_end.is_empty() && lines.peek().is_some() {
                        b"\n"
                    } else {
                        line_end
                    };
                    out.extend_from_slice(end);
                }
                data_written = true;
            }
        } else {
            out.extend_from_slice(content);
            out.extend_from_slice(line_end);
        }
    }
    Ok((out, removed))
}
