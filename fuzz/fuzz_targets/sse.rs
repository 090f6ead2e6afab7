//! The SSE splitter (`providers::sse`): any bytes, any chunking, any event limit. Checked against
//! a byte-by-byte reference: the same events in the same order, events plus remainder are the
//! input, a refusal exactly when some event is over the limit, and nothing after a refusal.
//!
//! Input layout: byte 0 is the limit (0: the default, else × 8 bytes); byte 1 % 17 is the number
//! of cuts, each the length of one chunk (a byte each); the rest is the stream.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use router_one_providers::sse::{MAX_EVENT_BYTES, SseSplitter, event_data};

/// The events of `text` and its unterminated tail, one byte at a time.
fn reference(text: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut events = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        let end = match &text[i..] {
            [b'\n', b'\n', ..] => Some(i + 2),
            [b'\n', b'\r', b'\n', ..] => Some(i + 3),
            _ => None,
        };
        match end {
            Some(end) => {
                events.push(&text[start..end]);
                start = end;
                i = end;
            }
            None => i += 1,
        }
    }
    (events, &text[start..])
}

fuzz_target!(|input: &[u8]| {
    let [limit, cuts, rest @ ..] = input else {
        return;
    };
    let limit = if *limit == 0 {
        MAX_EVENT_BYTES
    } else {
        usize::from(*limit) * 8
    };
    let cuts = usize::from(*cuts % 17).min(rest.len());
    let (lengths, text) = rest.split_at(cuts);
    let mut chunks = Vec::new();
    let mut from = 0;
    for len in lengths {
        let to = (from + usize::from(*len)).min(text.len());
        chunks.push(&text[from..to]);
        from = to;
    }
    chunks.push(&text[from..]);

    let mut splitter = SseSplitter::with_limit(limit);
    let mut out = Vec::new();
    let mut refused = false;
    for chunk in chunks {
        let pushed = splitter.push(Bytes::copy_from_slice(chunk), &mut out);
        assert!(!(refused && pushed.is_ok()), "a chunk was read after a refusal");
        refused |= pushed.is_err();
    }
    let rest = splitter.remainder();

    let (events, tail) = reference(text);
    let oversized = events.iter().position(|e| e.len() > limit);
    assert_eq!(
        refused,
        oversized.is_some() || tail.len() > limit,
        "refused: {refused}, limit {limit}"
    );
    let expected = &events[..oversized.unwrap_or(events.len())];
    if refused {
        assert!(out.len() <= expected.len() && out.iter().zip(expected).all(|(a, b)| a == b));
        assert_eq!(rest, None, "a remainder after a refusal");
    } else {
        assert_eq!(out, expected, "events differ from the reference");
        match &rest {
            None => assert!(tail.iter().all(u8::is_ascii_whitespace), "a remainder was lost"),
            Some(rest) => {
                assert!(
                    rest.starts_with(tail) && rest.len() <= tail.len() + 2,
                    "remainder {rest:?}"
                );
                assert_eq!(
                    reference(rest).0.concat(),
                    rest.to_vec(),
                    "the remainder is not one whole event"
                );
            }
        }
    }
    for event in out.iter().chain(&rest) {
        if let Some(data) = event_data(event) {
            assert!(data.len() <= event.len());
        }
    }
});
