//! Server-sent events: splitting an upstream byte stream into whole events without copying
//! when chunks arrive aligned.

use bytes::{Buf, Bytes, BytesMut};

/// Splits a byte stream into whole SSE events (each returned with its terminating blank line).
#[derive(Debug, Default)]
pub struct SseSplitter {
    pending: BytesMut,
}

impl SseSplitter {
    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        if self.pending.is_empty() {
            let mut chunk = chunk;
            while let Some(end) = event_end(&chunk) {
                out.push(chunk.split_to(end));
            }
            if !chunk.is_empty() {
                self.pending.extend_from_slice(&chunk);
            }
            return;
        }
        self.pending.extend_from_slice(&chunk);
        while let Some(end) = event_end(&self.pending) {
            out.push(self.pending.split_to(end).freeze());
        }
    }

    /// Bytes of an unterminated event left when the stream ended.
    pub fn remainder(&mut self) -> Option<Bytes> {
        if self.pending.iter().all(u8::is_ascii_whitespace) {
            self.pending.clear();
            return None;
        }
        let rest = self.pending.split().freeze();
        Some(rest)
    }
}

/// The end (exclusive) of the first complete event: after `\n\n` or `\r\n\r\n`.
fn event_end(buf: &[u8]) -> Option<usize> {
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
            s.push(Bytes::copy_from_slice(c), &mut out);
        }
        out
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

    proptest! {
        /// However the bytes are chunked, the same events come out.
        #[test]
        fn chunking_does_not_change_events(cuts in proptest::collection::vec(0usize..60, 0..8)) {
            let text: &[u8] = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n: comment\n\ndata: [DONE]\n\n";
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points { chunks.push(&text[last..p]); last = p; }
            chunks.push(&text[last..]);
            let out = split_all(&chunks);
            prop_assert_eq!(out.len(), 4);
            prop_assert_eq!(out.concat(), text.to_vec());
        }
    }
}
