//! Directives: per-request fault injection and test control, independent of any wire format.
//!
//! # Syntax
//! A directive list is `key=value` or bare `key` items separated by commas, e.g.
//! `status=429` or `cut=3,tpot_ms=20`. It is read from two places, merged (later wins):
//! 1. the request header `x-sim: <list>`;
//! 2. every `[[sim:<list>]]` found in the last user message (or in any embeddings input string),
//!    because a gateway under test does not forward client headers.
//!
//! # Keys
//! | key | effect |
//! | --- | --- |
//! | `status=NNN` (400–599) | respond with that status and an error body, message `simulated error NNN` |
//! | `timeout` | accept the request and never answer (sleep one hour) |
//! | `reset` | close the TCP connection with an RST, no response at all |
//! | `malformed` | 200 with a truncated, invalid JSON body (streams: `data: {not json` then `[DONE]`) |
//! | `cut=N` | streams only: after N content chunks (or all, if fewer), drop the connection: no finish chunk, no usage, no `[DONE]` |
//! | `ttft_ms=N`, `tpot_ms=N` | override the server's pacing for this request |
//! | `cached=N` | N of the prompt tokens were served from cache (at most the prompt tokens) |
//! | `reasoning=N` | the model also reasoned N tokens: added to the completion tokens (once per response, whatever OpenAI's `n`), not capped by max tokens, so it is the way to make a response cost more than its cap allows |
//! | `words=N` | make the reply exactly N words (padded with `lorem`) before any max-tokens cap; at most 100,000 words, shared by OpenAI's `n` choices (each gets at most 100,000 / n) |
//! | `report_prompt=N`, `report_completion=N`, `report_cached=N`, `report_reasoning=N` | a lying upstream: the usage *reported* says N instead of the real count, field by field (table below); the answer, its pacing and its cap stay what they would be |
//! | `endless_event` | OpenAI streams only: after the role chunk, one event that never ends (6 MiB without a blank line), then the connection drops |
//! | `route=NAME` | the request's faults (`status`, `timeout`, `reset`, `malformed`, `cut`, `endless_event`) apply only if it arrived through the route `NAME`, i.e. under the path prefix `/NAME/` (`--demo` serves every model over `sim-a` and `sim-b`); through any other route they are ignored |
//!
//! Bare flags also accept `=1`/`=true` (and `=0`/`=false` to switch them off). Unknown keys and
//! unparsable values are ignored (a number above 18446744073709551615 is unparsable); parsing
//! never fails.
//!
//! # Reported usage
//! Each `report_*` directive replaces exactly one wire field with N (any u64, written as its
//! exact digits); every other field is the real count, and totals are recomputed from the
//! reported fields, saturating at 18446744073709551615.
//!
//! | directive | OpenAI chat `usage` | OpenAI embeddings `usage` | Anthropic `usage` | Gemini `usageMetadata` |
//! | --- | --- | --- | --- | --- |
//! | `report_prompt` | `prompt_tokens` | `prompt_tokens` (and `total_tokens`) | `input_tokens` (the uncached input; in the body and `message_start`) | `promptTokenCount` |
//! | `report_completion` | `completion_tokens` | — | `output_tokens` (in the body and `message_delta`; `message_start` keeps its 1) | `candidatesTokenCount` |
//! | `report_cached` | `prompt_tokens_details.cached_tokens` | — | `cache_read_input_tokens` (body and `message_start`) | `cachedContentTokenCount` |
//! | `report_reasoning` | `completion_tokens_details.reasoning_tokens` | — | — (Anthropic has no such field: thinking is part of `output_tokens`) | `thoughtsTokenCount` |
//! | totals | `total_tokens` = prompt + completion | `total_tokens` = prompt | — | `totalTokenCount` = prompt + candidates + thoughts |
//!
//! OpenAI streams report in the usage chunk (with `include_usage`); Gemini streams in every
//! chunk's `usageMetadata`. So `report_reasoning=20000` alone makes `reasoning_tokens` 20000
//! while `completion_tokens` stays the real count (an impossible report), whereas
//! `reasoning=20000` adds 20000 real tokens to both.

use std::time::Duration;

use http::StatusCode;

use crate::SimConfig;
use crate::tokens::Reported;

/// The largest `words=N` honoured, for all the choices of a response together, so a typo
/// cannot make us allocate gigabytes.
const MAX_WORDS: u64 = 100_000;
/// The longest per-request delay honoured (`ttft_ms`, `tpot_ms`), also the `timeout` sleep.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The directives of one request; the default is "behave normally".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// `status=NNN`: answer with this error status.
    pub(crate) status: Option<StatusCode>,
    /// `timeout`: never answer.
    pub(crate) timeout: bool,
    /// `reset`: drop the connection with an RST.
    pub(crate) reset: bool,
    /// `malformed`: send an invalid body.
    pub(crate) malformed: bool,
    /// `cut=N`: end a stream abruptly after N content chunks.
    pub(crate) cut: Option<u64>,
    /// `ttft_ms=N`: time to first token for this request.
    pub(crate) ttft: Option<Duration>,
    /// `tpot_ms=N`: time per output token for this request.
    pub(crate) tpot: Option<Duration>,
    /// `cached=N`: cached prompt tokens to report.
    pub(crate) cached: Option<u64>,
    /// `reasoning=N`: reasoning tokens to report (added to completion tokens).
    pub(crate) reasoning: Option<u64>,
    /// `words=N`: exact reply length in words.
    pub(crate) words: Option<u64>,
    /// `report_*=N`: usage fields to report instead of the real ones.
    pub(crate) report: Reported,
    /// `keepalive`: open a stream with an SSE comment line, as some hosts do.
    pub(crate) keepalive: bool,
    /// `endless_event`: stream one event that never ends.
    pub(crate) endless_event: bool,
    /// `route=NAME`: the faults apply only to requests that arrived through this route (a
    /// hash of its name, so the directives stay `Copy`).
    pub(crate) route: Option<u64>,
    /// The route the request arrived through (its path prefix), set by the server.
    pub(crate) arrived: Option<u64>,
}

/// The header through which the server tells a handler the route a request arrived by (the
/// path prefix it stripped); a client-sent one is replaced.
pub(crate) const ARRIVED_HEADER: &str = "x-sim-arrived-via";

/// A route name's hash (FNV-1a): equal names, equal hashes.
pub(crate) fn route_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a request's directives say to do instead of answering normally, most drastic first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Drop the connection with an RST.
    Reset,
    /// Never answer.
    Timeout,
    /// Answer with this error status.
    Status(StatusCode),
    /// Answer 200 with an invalid body.
    Malformed,
}

/// How to pace one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pacing {
    /// Wait before the first content chunk.
    pub(crate) ttft: Duration,
    /// Wait between two content chunks.
    pub(crate) tpot: Duration,
}

impl Pacing {
    /// Total wait of a non-streamed answer of `chunks` content chunks: ttft + chunks × tpot.
    pub(crate) fn total(&self, chunks: u64) -> Duration {
        let chunks = u32::try_from(chunks).unwrap_or(u32::MAX);
        self.ttft
            .saturating_add(self.tpot.saturating_mul(chunks))
            .min(MAX_DELAY)
    }
}

impl Directives {
    /// Applies a `k=v,k=v` list; junk is ignored.
    pub(crate) fn apply_list(&mut self, list: &str) {
        for item in list.split(',') {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (item.trim(), None),
            };
            self.apply(key, value);
        }
        self.target();
    }

    /// A `route=` that names another route than the request's drops the faults.
    fn target(&mut self) {
        if self.route.is_some() && self.route != self.arrived {
            self.status = None;
            self.timeout = false;
            self.reset = false;
            self.malformed = false;
            self.cut = None;
            self.endless_event = false;
        }
    }

    /// Applies every `[[sim:...]]` found in `text`.
    pub(crate) fn apply_text(&mut self, text: &str) {
        const OPEN: &str = "[[sim:";
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            let after = &rest[start + OPEN.len()..];
            let Some(end) = after.find("]]") else { return };
            self.apply_list(&after[..end]);
            rest = &after[end + 2..];
        }
    }

    fn apply(&mut self, key: &str, value: Option<&str>) {
        let number = value.and_then(|v| v.parse::<u64>().ok());
        match key {
            "status" => {
                self.status = number
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| (400..600).contains(n))
                    .and_then(|n| StatusCode::from_u16(n).ok());
            }
            "timeout" => self.timeout = flag(value),
            "reset" => self.reset = flag(value),
            "malformed" => self.malformed = flag(value),
            "cut" => self.cut = number,
            "ttft_ms" => self.ttft = number.map(millis),
            "tpot_ms" => self.tpot = number.map(millis),
            "cached" => self.cached = number,
            "reasoning" => self.reasoning = number,
            "words" => self.words = number.map(|n| n.min(MAX_WORDS)),
            "report_prompt" => self.report.prompt = number,
            "report_completion" => self.report.completion = number,
            "report_cached" => self.report.cached = number,
            "report_reasoning" => self.report.reasoning = number,
            "keepalive" => self.keepalive = flag(value),
            "endless_event" => self.endless_event = flag(value),
            "route" => self.route = value.map(route_hash),
            _ => {}
        }
    }

    /// These directives for each of `choices` choices of one response: `words=N` shrunk so that
    /// together they stay within [`MAX_WORDS`].
    pub(crate) fn per_choice(&self, choices: usize) -> Directives {
        let share = MAX_WORDS / u64::try_from(choices.max(1)).unwrap_or(u64::MAX);
        Directives {
            words: self.words.map(|words| words.min(share)),
            ..*self
        }
    }

    /// The fault to inject, if any; reset beats timeout beats status beats malformed.
    pub(crate) fn fault(&self) -> Option<Fault> {
        if self.reset {
            Some(Fault::Reset)
        } else if self.timeout {
            Some(Fault::Timeout)
        } else if let Some(status) = self.status {
            Some(Fault::Status(status))
        } else if self.malformed {
            Some(Fault::Malformed)
        } else {
            None
        }
    }

    /// The pacing of this request: its overrides, else the server's.
    pub(crate) fn pacing(&self, config: &SimConfig) -> Pacing {
        Pacing {
            ttft: self.ttft.unwrap_or(config.ttft),
            tpot: self.tpot.unwrap_or(config.tpot),
        }
    }
}

/// A bare flag is on; `=0`, `=false`, `=no` and `=off` turn it off.
fn flag(value: Option<&str>) -> bool {
    !matches!(value, Some("0" | "false" | "no" | "off"))
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Directives {
        let mut d = Directives::default();
        d.apply_text(text);
        d
    }

    #[test]
    fn reads_lists_from_text() {
        let d = parse("hello [[sim:status=429, tpot_ms=5]] and [[sim:words=3,reset]]");
        assert_eq!(d.status, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(d.tpot, Some(Duration::from_millis(5)));
        assert_eq!(d.words, Some(3));
        assert!(d.reset);
        assert_eq!(d.fault(), Some(Fault::Reset));
    }

    #[test]
    fn header_list_and_flags() {
        let mut d = Directives::default();
        d.apply_list("timeout,malformed=0,cut=2,cached=7,reasoning=9,ttft_ms=1");
        assert!(d.timeout && !d.malformed);
        assert_eq!((d.cut, d.cached, d.reasoning), (Some(2), Some(7), Some(9)));
        assert_eq!(d.fault(), Some(Fault::Timeout));
        let pacing = d.pacing(&SimConfig::default());
        assert_eq!(pacing.ttft, Duration::from_millis(1));
        assert_eq!(pacing.tpot, Duration::ZERO);
    }

    #[test]
    fn report_directives_take_any_u64() {
        let d = parse(
            "[[sim:report_prompt=18446744073709551615,report_completion=0]] \
             [[sim:report_cached=7, report_reasoning=20000]]",
        );
        assert_eq!(
            d.report,
            Reported {
                prompt: Some(u64::MAX),
                completion: Some(0),
                cached: Some(7),
                reasoning: Some(20_000),
            }
        );
        assert_eq!(d.fault(), None);
        let d = parse("[[sim:report_prompt=18446744073709551616,report_cached=-1,report_reasoning]]");
        assert_eq!(d, Directives::default());
    }

    #[test]
    fn choices_share_the_word_limit() {
        let d = parse("[[sim:words=99999999,reasoning=5]]");
        assert_eq!(d.per_choice(1), d);
        assert_eq!(d.per_choice(0), d);
        let shared = d.per_choice(128);
        assert_eq!((shared.words, shared.reasoning), (Some(MAX_WORDS / 128), Some(5)));
        assert_eq!(parse("[[sim:words=3]]").per_choice(128).words, Some(3));
    }

    #[test]
    fn junk_is_ignored() {
        for junk in [
            "[[sim:",
            "[[sim:]]",
            "[[sim:=,=,,]]",
            "[[sim:status=abc]]",
            "[[sim:status=200]]",
            "[[sim:status=99999999999999999999]]",
            "[[sim:words=-1,bogus=1]]",
            "]][[sim:status",
            "[[sim:status=é]]",
            "[[[[sim:[[sim:]]]]",
        ] {
            assert_eq!(parse(junk), Directives::default(), "{junk}");
        }
    }

    #[test]
    fn clamps_huge_values() {
        let d = parse("[[sim:words=99999999,ttft_ms=18446744073709551615]]");
        assert_eq!(d.words, Some(MAX_WORDS));
        assert_eq!(d.ttft, Some(MAX_DELAY));
        let pacing = Pacing {
            ttft: MAX_DELAY,
            tpot: MAX_DELAY,
        };
        assert_eq!(pacing.total(u64::MAX), MAX_DELAY);
    }

    #[test]
    fn a_route_targets_the_faults_at_the_requests_that_arrived_through_it() {
        let via = |route: Option<&str>, list: &str| {
            let mut d = Directives {
                arrived: route.map(route_hash),
                ..Directives::default()
            };
            d.apply_text(list);
            d
        };
        let faults = "[[sim:route=sim-a,status=503,cut=2]] [[sim:words=3]]";
        let a = via(Some("sim-a"), faults);
        assert_eq!(
            (a.fault(), a.cut),
            (Some(Fault::Status(StatusCode::SERVICE_UNAVAILABLE)), Some(2))
        );
        for other in [Some("sim-b"), None] {
            let b = via(other, faults);
            assert_eq!((b.fault(), b.cut, b.words), (None, None, Some(3)), "{other:?}");
        }
        // Without `route=`, faults apply through every route.
        assert!(via(Some("sim-b"), "[[sim:reset]]").fault().is_some());
    }
}
