//! Reading a request body as the upstreams' own parsers do: when an object repeats a key, the
//! last value wins (Python's `json`, JavaScript's `JSON.parse`), at every level.
//!
//! The request structs are serde-derived, and serde refuses a repeated field. So a body is first
//! read as it is, borrowing from it (the fast path: nothing is copied or rewritten). Only when that
//! fails on the data (a repeated key, or a first value of the wrong type that a later one would
//! replace) is the body read as a `serde_json::Value`, whose objects keep the last value of each
//! key, written back out and read again from that copy. If the copy fails as well, the first error
//! is the answer, so a body without repeated keys gets exactly the message it always got.
//!
//! Fields a request struct keeps as raw JSON text (`tool_choice`) are rewritten only when some
//! other part of the body took the slow path; otherwise a key repeated inside `tool_choice` makes
//! it read as `"auto"`.

use serde::Deserialize;

/// Reads `body` as `T`, the last value of a repeated key winning; `copy` holds the rewritten body
/// when one was needed (it stays `None` on the fast path).
pub(crate) fn from_slice<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    copy: &'a mut Option<Vec<u8>>,
) -> Result<T, serde_json::Error> {
    let first_error = match serde_json::from_slice(body) {
        Ok(parsed) => return Ok(parsed),
        Err(err) if err.is_data() => err,
        Err(err) => return Err(err),
    };
    let rewritten: &'a [u8] = copy.insert(last_values_only(body)?);
    serde_json::from_slice(rewritten).map_err(|_| first_error)
}

/// `body` written out again with one entry per object key: the last one. Its error, if any, is
/// one of syntax that the typed read stopped before reaching, and its position is in `body`.
fn last_values_only(body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    serde_json::to_vec(&value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
        max_tokens: Option<u64>,
        options: Option<Options>,
    }

    #[derive(Debug, Deserialize)]
    struct Options {
        flag: Option<bool>,
    }

    #[test]
    fn a_body_without_repeats_is_read_in_place() {
        let mut copy = None;
        let r: Request<'_> = from_slice(br#"{"model":"a","max_tokens":3,"x":{"x":1,"x":2}}"#, &mut copy).unwrap();
        assert_eq!(r.model.as_deref(), Some("a"));
        assert_eq!(r.max_tokens, Some(3));
        assert!(copy.is_none(), "no rewrite on the fast path");
    }

    #[test]
    fn the_last_value_wins_at_every_level() {
        let mut copy = None;
        let body = br#"{"model":"a","max_tokens":"x","options":{"flag":true,"flag":false},
            "model":"b","max_tokens":9,"options":{"flag":true},"options":{"flag":false,"flag":null}}"#;
        let r: Request<'_> = from_slice(body, &mut copy).unwrap();
        assert_eq!(r.model.as_deref(), Some("b"));
        assert_eq!(r.max_tokens, Some(9));
        assert_eq!(r.options.unwrap().flag, None);
        assert!(copy.is_some());
    }

    #[test]
    fn errors_are_those_of_the_body_as_sent() {
        let mut copy = None;
        let err = from_slice::<Request<'_>>(br#"{"max_tokens":"x"}"#, &mut copy).unwrap_err();
        assert!(err.is_data() && err.to_string().contains("column 17"), "{err}");
        let err = from_slice::<Request<'_>>(br#"{"max_tokens":1,"max_tokens":"x"}"#, &mut None).unwrap_err();
        assert!(err.to_string().starts_with("duplicate field `max_tokens`"), "{err}");
        // The typed read stops at the repeat; the truncation behind it is the error to report.
        let err = from_slice::<Request<'_>>(br#"{"model":"a","model":"#, &mut None).unwrap_err();
        assert!(err.is_eof(), "{err}");
        let err = from_slice::<Request<'_>>(br#"{"model":1e999,"model":"a"}"#, &mut None).unwrap_err();
        assert!(!err.is_data(), "{err}");
    }
}
