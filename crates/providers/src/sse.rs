//! Server-sent events: splitting an upstream byte stream into whole events, without copying
//! when chunks arrive aligned on events and copying only the event that straddles a chunk
//! boundary when they do not. Each byte is scanned once, and an event is bounded: the upstream
//! cannot make the gateway buffer or rescan without limit.

use bytes::{Buf, Bytes, BytesMut};

/// The largest event accepted, terminating blank line included: 4 MiB.
///
/// Generous for real streams, whose events carry a few tokens each: the largest are a Gemini
/// chunk with a whole function call's arguments or a server tool's result, well under 1 MiB.
/// Even the longest answer the catalog allows (384K output tokens, about 1.5 MiB of text) fits
/// in one event with room for JSON escapes. Bigger is a broken or hostile stream; refusing it
/// bounds what one stream makes the gateway hold (the buffer's capacity, at most twice this).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// An upstream event longer than the splitter's limit ([`MAX_EVENT_BYTES`] unless set): the
/// stream is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an upstream stream event is longer than {limit} bytes")]
pub struct EventTooLarge {
    /// The limit it broke.
    pub limit: usize,
}

/// Splits a byte stream into whole SSE events (each returned with its terminating blank line).
#[derive(Debug)]
pub struct SseSplitter {
    /// The start of an unterminated event. Never holds a complete event, so a new chunk is
    /// scanned from where this ends (plus the seam), never from its start.
    pending: BytesMut,
    /// The largest event accepted, in bytes.
    limit: usize,
    /// An event broke the limit: nothing after it is read.
    spent: bool,
}

impl Default for SseSplitter {
    fn default() -> Self {
        SseSplitter::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseSplitter {
    /// A splitter that refuses events longer than `limit` bytes (the default is
    /// [`MAX_EVENT_BYTES`]; a smaller one lets tests and fuzzing reach the limit cheaply).
    pub fn with_limit(limit: usize) -> Self {
        SseSplitter {
            pending: BytesMut::new(),
            limit,
            spent: false,
        }
    }

    /// Feeds one chunk; appends the events it completed to `out`, in order.
    ///
    /// # Errors
    ///
    /// [`EventTooLarge`] when this chunk makes an event longer than the limit. Nothing
    /// from that chunk is appended (so a caller can stop at the error without sorting its
    /// events), the buffered bytes are dropped, and every later call fails the same way.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), EventTooLarge> {
        let before = out.len();
        let split = if self.spent {
            Err(EventTooLarge { limit: self.limit })
        } else {
            self.split(chunk, out)
        };
        if split.is_err() {
            out.truncate(before);
            self.pending = BytesMut::new();
            self.spent = true;
        }
        split
    }

    fn split(&mut self, mut chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), EventTooLarge> {
        if !self.pending.is_empty() {
            let Some(end) = self.end_in(&chunk) else {
                self.bounded(self.pending.len() + chunk.len())?;
                self.pending.extend_from_slice(&chunk);
                return Ok(());
            };
            // The one event that straddles the boundary is copied; the rest of the chunk is not.
            self.bounded(self.pending.len() + end)?;
            self.pending.extend_from_slice(&chunk[..end]);
            out.push(self.pending.split().freeze());
            chunk.advance(end);
        }
        while let Some(end) = event_end(&chunk) {
            self.bounded(end)?;
            out.push(chunk.split_to(end));
        }
        if !chunk.is_empty() {
            self.bounded(chunk.len())?;
            self.pending.extend_from_slice(&chunk);
        }
        Ok(())
    }

    /// Where in `chunk` the pending event ends, if it does. Its terminator may begin in the
    /// last two pending bytes (`\n` + `\n`, `\n` + `\r\n`, `\n\r` + `\n`), so that seam is
    /// looked at first; the pending bytes before it hold no terminator and are not rescanned.
    fn end_in(&self, chunk: &[u8]) -> Option<usize> {
        let tail = &self.pending[self.pending.len().saturating_sub(2)..];
        let head = &chunk[..chunk.len().min(2)];
        let mut seam = [0u8; 4];
        seam[..tail.len()].copy_from_slice(tail);
        seam[tail.len()..tail.len() + head.len()].copy_from_slice(head);
        match event_end(&seam[..tail.len() + head.len()]) {
            // `end > tail.len()`: the pending bytes alone hold no terminator.
            Some(end) => Some(end - tail.len()),
            None => event_end(chunk),
        }
    }

    /// Refuses an event of `len` bytes if it is over the limit.
    fn bounded(&self, len: usize) -> Result<(), EventTooLarge> {
        if len > self.limit {
            Err(EventTooLarge { limit: self.limit })
        } else {
            Ok(())
        }
    }

    /// The unterminated event left when the stream ended (`data: [DONE]` then close, say),
    /// completed with its blank line so that it reads, and is forwarded, like any other event:
    /// whatever follows it cannot run into it. `None` if only whitespace is left.
    pub fn remainder(&mut self) -> Option<Bytes> {
        if self.pending.iter().all(u8::is_ascii_whitespace) {
            self.pending.clear();
            return None;
        }
        // The pending bytes hold no blank line, so one more line end (two without one) ends them.
        let ends_a_line = self.pending.ends_with(b"\n") || self.pending.ends_with(b"\n\r");
        let end: &[u8] = if ends_a_line { b"\n" } else { b"\n\n" };
        self.pending.extend_from_slice(end);
        Some(self.pending.split().freeze())
    }
}

#[cfg(test)]
thread_local! {
    /// Bytes looked at by [`event_end`] on this thread: the tests' measure of scanning work.
    static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The end (exclusive) of the first complete event: after `\n\n` or `\r\n\r\n`.
fn event_end(buf: &[u8]) -> Option<usize> {
    let end = first_blank_line_end(buf);
    #[cfg(test)]
    SCANNED.with(|scanned| scanned.set(scanned.get() + end.unwrap_or(buf.len())));
    end
}

fn first_blank_line_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let i = from + i;
        let next = &buf[i + 1..];
        if next.first() == Some(&b'\n') {
            return Some(i + 2);
        }
        if next.starts_with(b"\r\n") {
            return Some(i + 3);
        }
        from = i + 1;
    }
    None
}

/// The payload of an event's `data:` line(s). Single-line events (all OpenAI-style streams)
/// are returned without copying.
pub fn event_data(event: &Bytes) -> Option<Bytes> {
    let mut found: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut rest = event.clone();
    while !rest.is_empty() {
        let line_end = memchr::memchr(b'\n', &rest).map_or(rest.len(), |i| i + 1);
        let mut line = rest.split_to(line_end);
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.truncate(line.len() - 1);
        }
        if let Some(data) = line.strip_prefix(b"data:") {
            let skip = line.len() - data.len() + usize::from(data.first() == Some(&b' '));
            line.advance(skip);
            match (&mut found, &mut joined) {
                (None, _) => found = Some(line),
                (Some(first), None) => {
                    let mut v = first.to_vec();
                    v.push(b'\n');
                    v.extend_from_slice(&line);
                    joined = Some(v);
                }
                (Some(_), Some(v)) => {
                    v.push(b'\n');
                    v.extend_from_slice(&line);
                }
            }
        }
    }
    joined.map(Bytes::from).or(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<Bytes> {
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(Bytes::copy_from_slice(c), &mut out).unwrap();
        }
        out
    }

    /// `text` cut at `cuts` (clamped and sorted).
    fn chunked(text: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&text[last..p]);
            last = p;
        }
        chunks.push(&text[last..]);
        chunks
    }

    /// Bytes scanned for event ends on this thread while `f` runs.
    fn scanned_by(f: impl FnOnce()) -> usize {
        let before = SCANNED.with(std::cell::Cell::get);
        f();
        SCANNED.with(std::cell::Cell::get) - before
    }

    #[test]
    fn splits_events_across_and_within_chunks() {
        let out = split_all(&[b"data: a\n\ndata: b", b"c\n", b"\ndata: [DONE]\n\n"]);
        assert_eq!(
            out,
            vec![
                Bytes::from("data: a\n\n"),
                Bytes::from("data: bc\n\n"),
                Bytes::from("data: [DONE]\n\n")
            ]
        );
        assert_eq!(event_data(&out[1]).unwrap(), Bytes::from("bc"));
    }

    #[test]
    fn handles_crlf_and_multiline_data() {
        let out = split_all(&[b"event: x\r\ndata: 1\r\ndata:2\r\n\r\n"]);
        assert_eq!(out.len(), 1);
        assert_eq!(event_data(&out[0]).unwrap(), Bytes::from("1\n2"));
    }

    #[test]
    fn terminators_split_at_every_seam_position() {
        for text in [&b"data: a\r\n\r\ndata: b\n\n"[..], b"data: a\n\r\ndata: b\r\n\n"] {
            for cut in 0..=text.len() {
                for cut2 in cut..=text.len() {
                    let out = split_all(&[&text[..cut], &text[cut..cut2], &text[cut2..]]);
                    assert_eq!(out.len(), 2, "cuts {cut}, {cut2}");
                    assert_eq!(out.concat(), text.to_vec());
                }
            }
        }
    }

    /// Found by fuzzing: a last event without its blank line was forwarded as is, so the
    /// gateway's own final event (usage, `[DONE]`, an error) ran into its `data:` line.
    #[test]
    fn an_unterminated_last_event_is_completed() {
        for (rest, whole) in [
            (&b"data: {\"a\":1}"[..], &b"data: {\"a\":1}\n\n"[..]),
            (b"data: x\n", b"data: x\n\n"),
            (b"data: x\r", b"data: x\r\n\n"),
            (b"data: x\r\n", b"data: x\r\n\n"),
            (b"data: x\n\r", b"data: x\n\r\n"),
        ] {
            let mut s = SseSplitter::default();
            let mut out = Vec::new();
            s.push(Bytes::copy_from_slice(rest), &mut out).unwrap();
            assert!(out.is_empty());
            let event = s.remainder().unwrap();
            assert_eq!(&event[..], whole);
            assert_eq!(first_blank_line_end(&event), Some(event.len()));
            assert_eq!(event_data(&event), event_data(&Bytes::copy_from_slice(rest)));
        }
        let mut s = SseSplitter::default();
        s.push(Bytes::from_static(b"\r\n \n"), &mut Vec::new()).unwrap();
        assert_eq!(s.remainder(), None);
    }

    /// Issue 10, item 12: an upstream that never ends its event is refused at the limit instead
    /// of growing the buffer without bound, and nothing after it is read.
    #[test]
    fn an_endless_event_is_refused_at_the_limit() {
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        let piece = Bytes::from(vec![b'x'; 64 * 1024]);
        s.push(Bytes::from_static(b"data: {\"a\":1}\n\ndata: "), &mut out)
            .unwrap();
        let mut fed = 6;
        while fed + piece.len() <= MAX_EVENT_BYTES {
            s.push(piece.clone(), &mut out).unwrap();
            fed += piece.len();
        }
        assert_eq!(
            s.push(piece.clone(), &mut out),
            Err(EventTooLarge { limit: MAX_EVENT_BYTES })
        );
        assert_eq!(out, vec![Bytes::from("data: {\"a\":1}\n\n")]);
        assert!(s.pending.capacity() == 0, "the buffered event is dropped");
        assert!(s.push(Bytes::from_static(b"\n\ndata: 2\n\n"), &mut out).is_err());
        assert_eq!(out.len(), 1);
        assert_eq!(s.remainder(), None);
    }

    #[test]
    fn the_limit_counts_the_whole_event_however_it_arrives() {
        let limit = 64;
        let event = |len: usize| {
            let mut e = vec![b'x'; len - 2];
            e.extend_from_slice(b"\n\n");
            e
        };
        for len in [limit, limit + 1] {
            let text = event(len);
            for cuts in [
                vec![],
                vec![1],
                vec![len - 1],
                vec![len - 2],
                vec![10, 20, 30, 40, 50, 60],
            ] {
                let mut s = SseSplitter::with_limit(limit);
                let mut out = Vec::new();
                let results: Vec<_> = chunked(&text, cuts)
                    .into_iter()
                    .map(|c| s.push(Bytes::copy_from_slice(c), &mut out))
                    .collect();
                if len <= limit {
                    assert!(results.iter().all(Result::is_ok));
                    assert_eq!(out, vec![Bytes::from(text.clone())]);
                } else {
                    assert_eq!(results.last(), Some(&Err(EventTooLarge { limit })));
                    assert!(out.is_empty());
                }
            }
        }
    }

    #[test]
    fn a_refused_chunk_yields_none_of_its_events() {
        let mut s = SseSplitter::with_limit(16);
        let mut out = Vec::new();
        let chunk = Bytes::from_static(b"data: 1\n\ndata: 0123456789abcdef\n\n");
        assert!(s.push(chunk, &mut out).is_err());
        assert!(out.is_empty());
    }

    /// Issue 10, item 12: the buffer is not rescanned per chunk. An event fed in small pieces
    /// costs one scan of its bytes (plus a few seam bytes per chunk), not one per chunk.
    #[test]
    fn a_long_event_fed_in_pieces_is_scanned_once() {
        let total = 256 * 1024;
        let piece = 64;
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        let work = scanned_by(|| {
            s.push(Bytes::from_static(b"data: "), &mut out).unwrap();
            for _ in 0..total / piece {
                s.push(Bytes::from(vec![b'x'; piece]), &mut out).unwrap();
            }
            s.push(Bytes::from_static(b"\n\n"), &mut out).unwrap();
        });
        assert_eq!(out.len(), 1);
        let pushes = total / piece + 2;
        assert!(
            work <= total + 8 + 4 * pushes,
            "scanned {work} bytes for a {total}-byte event"
        );
    }

    #[test]
    fn many_unaligned_events_are_scanned_once() {
        let text = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n".repeat(500);
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        let work = scanned_by(|| {
            for c in text.chunks(7) {
                s.push(Bytes::copy_from_slice(c), &mut out).unwrap();
            }
        });
        assert_eq!(out.concat(), text);
        let pushes = text.len().div_ceil(7);
        assert!(
            work <= text.len() + 4 * pushes,
            "scanned {work} bytes of {}",
            text.len()
        );
    }

    /// Only the event that straddles two chunks is copied: the events after it in the second
    /// chunk are slices of that chunk.
    #[test]
    fn events_after_a_straddling_one_are_not_copied() {
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        s.push(Bytes::from_static(b"data: a"), &mut out).unwrap();
        let second = Bytes::from_static(b"\n\ndata: b\n\ndata: c\n\n");
        let range = second.as_ptr_range();
        s.push(second.clone(), &mut out).unwrap();
        assert_eq!(out.concat(), b"data: a\n\ndata: b\n\ndata: c\n\n".to_vec());
        assert!(!range.contains(&out[0].as_ptr()));
        assert!(out[1..].iter().all(|e| range.contains(&e.as_ptr())));
    }

    proptest! {
        /// However the bytes are chunked, the same events come out.
        #[test]
        fn chunking_does_not_change_events(cuts in proptest::collection::vec(0usize..60, 0..8)) {
            let text: &[u8] = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n: comment\n\ndata: [DONE]\n\n";
            let out = split_all(&chunked(text, cuts));
            prop_assert_eq!(out.len(), 4);
            prop_assert_eq!(out.concat(), text.to_vec());
        }

        /// Any bytes, any chunking: the events and the remainder are the input, each event ends
        /// in a blank line and holds no earlier one, and the events are those of one whole chunk.
        #[test]
        fn events_and_remainder_are_the_input(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a')], 0..80),
            cuts in proptest::collection::vec(0usize..80, 0..8),
        ) {
            let whole = split_all(&[&text]);
            let mut s = SseSplitter::default();
            let mut out = Vec::new();
            for c in chunked(&text, cuts) {
                s.push(Bytes::copy_from_slice(c), &mut out).unwrap();
            }
            prop_assert_eq!(&out, &whole);
            let mut rebuilt = out.concat();
            rebuilt.extend_from_slice(&s.pending);
            prop_assert_eq!(rebuilt, text);
            for e in &out {
                prop_assert_eq!(first_blank_line_end(e), Some(e.len()));
            }
        }
    }
}
