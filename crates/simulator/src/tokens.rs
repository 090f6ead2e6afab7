//! The simulator's token rule: deterministic, format-neutral, and easy to compute by hand.
//!
//! A "word" is a run of non-whitespace characters (`str::split_whitespace`).
//!
//! - **prompt tokens** = Σ over messages of (4 + words of the message's text) + 3, where a
//!   message's text is its string content, or its `text` parts concatenated as they are (no
//!   separator); a message without text (an assistant turn with only tool calls) counts 4.
//!   Embeddings: the words of all input strings, or the number of tokens of token-array inputs.
//! - **completion tokens** = words of the reply, or 10 per tool call, plus `reasoning=N`. With
//!   OpenAI's `n` choices: the sum over the choices of their words (or 10 per tool call), plus
//!   `reasoning=N` once for the whole response.
//! - **cap**: `max_completion_tokens` (else `max_tokens`) truncates a text reply to that many
//!   words; the finish reason is then "length". Each of `n` choices is capped on its own, so a
//!   response of text is at most n × cap completion tokens. Tool calls and reasoning tokens are
//!   not capped: a choice that calls tools is 10 tokens per call (at most two calls, so 20) even
//!   under a smaller cap, and `reasoning=N` adds N whatever the cap.
//! - **cached tokens** = `cached=N`, at most the prompt tokens; **reasoning tokens** = `reasoning=N`.
//! - **reported** numbers are these, unless a `report_*` directive replaces one field of the wire
//!   usage (see `directives`).
//!
//! Example: one user message `"Hi there"` costs 4 + 2 + 3 = 9 prompt tokens, and the reply
//! `Simulated reply from m. You said: Hi there` is 8 completion tokens.

/// Fixed cost of each message of a prompt.
pub(crate) const PER_MESSAGE: u64 = 4;
/// Fixed cost of priming the reply, added once per prompt.
pub(crate) const PER_PROMPT: u64 = 3;
/// Completion tokens of one tool call.
pub(crate) const PER_TOOL_CALL: u64 = 10;

/// The word used to pad a reply to the length asked by `words=N`.
const PAD_WORD: &str = "lorem";

/// Number of whitespace-separated words in `text`.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Token usage of one answer, before it is put in any wire format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Prompt tokens.
    pub(crate) prompt: u64,
    /// Completion tokens, reasoning included.
    pub(crate) completion: u64,
    /// Prompt tokens served from cache (≤ `prompt`).
    pub(crate) cached: u64,
    /// Reasoning tokens (part of `completion`).
    pub(crate) reasoning: u64,
}

impl Usage {
    /// Builds usage from visible completion tokens and the `cached` / `reasoning` directives.
    pub(crate) fn new(prompt: u64, visible: u64, cached: Option<u64>, reasoning: Option<u64>) -> Self {
        let reasoning = reasoning.unwrap_or(0);
        Usage {
            prompt,
            completion: visible.saturating_add(reasoning),
            cached: cached.unwrap_or(0).min(prompt),
            reasoning,
        }
    }

    /// Prompt plus completion tokens.
    pub(crate) fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

/// The `report_*` directives: usage to report instead of the real one, as a hostile or broken
/// upstream would. Each replaces one field of the wire usage (every format maps them in its own
/// module); what the simulator generates, and the usage it is paced and capped by, stay real.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reported {
    /// `report_prompt=N`: the prompt (OpenAI, Gemini) or uncached input (Anthropic) tokens.
    pub(crate) prompt: Option<u64>,
    /// `report_completion=N`: the completion (OpenAI), output (Anthropic) or candidates
    /// (Gemini) tokens.
    pub(crate) completion: Option<u64>,
    /// `report_cached=N`: the cached prompt tokens.
    pub(crate) cached: Option<u64>,
    /// `report_reasoning=N`: the reasoning (OpenAI) or thoughts (Gemini) tokens.
    pub(crate) reasoning: Option<u64>,
}

impl Usage {
    /// This usage with every field a `report_*` directive names replaced by its value.
    pub(crate) fn reported(self, report: &Reported) -> Usage {
        Usage {
            prompt: report.prompt.unwrap_or(self.prompt),
            completion: report.completion.unwrap_or(self.completion),
            cached: report.cached.unwrap_or(self.cached),
            reasoning: report.reasoning.unwrap_or(self.reasoning),
        }
    }
}

/// A text reply rewritten to its final form: words joined by single spaces, padded or trimmed to
/// `words` if given, then truncated to `cap` words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shaped {
    /// The final text; splitting it on `' '` gives exactly `words` pieces.
    pub(crate) text: String,
    /// Its number of words, which are its completion tokens.
    pub(crate) words: u64,
    /// Whether `cap` cut it short (finish reason "length").
    pub(crate) capped: bool,
}

/// Shapes `text` as [`Shaped`] describes.
pub(crate) fn shape(text: &str, words: Option<u64>, cap: Option<u64>) -> Shaped {
    let natural = count_words(text);
    let wanted = words.unwrap_or(natural);
    let limit = cap.map_or(wanted, |cap| cap.min(wanted));
    let pads = text.split_whitespace().chain(std::iter::repeat(PAD_WORD));
    let mut out = String::with_capacity(text.len());
    for word in pads.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Shaped {
        text: out,
        words: limit,
        capped: limit < wanted,
    }
}

/// The first `max` characters of `text` (not bytes: never splits a character).
pub(crate) fn first_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(count_words(""), 0);
        assert_eq!(count_words("  a\tb\n c  "), 3);
    }

    #[test]
    fn shapes_normalises_pads_and_caps() {
        let s = shape(" a  b\nc ", None, None);
        assert_eq!((s.text.as_str(), s.words, s.capped), ("a b c", 3, false));
        let s = shape("a b", Some(4), None);
        assert_eq!((s.text.as_str(), s.words, s.capped), ("a b lorem lorem", 4, false));
        let s = shape("a b c", Some(2), None);
        assert_eq!((s.text.as_str(), s.words, s.capped), ("a b", 2, false));
        let s = shape("a b c", None, Some(2));
        assert_eq!((s.text.as_str(), s.words, s.capped), ("a b", 2, true));
        let s = shape("a b c", Some(5), Some(5));
        assert_eq!((s.text.as_str(), s.words, s.capped), ("a b c lorem lorem", 5, false));
        let s = shape("a b c", None, Some(0));
        assert_eq!((s.text.as_str(), s.words, s.capped), ("", 0, true));
    }

    #[test]
    fn usage_clamps_cached_and_adds_reasoning() {
        let u = Usage::new(10, 5, Some(50), Some(7));
        assert_eq!(
            u,
            Usage {
                prompt: 10,
                completion: 12,
                cached: 10,
                reasoning: 7
            }
        );
        assert_eq!(u.total(), 22);
    }

    #[test]
    fn reports_replace_only_the_fields_they_name() {
        let real = Usage::new(10, 5, Some(2), Some(1));
        assert_eq!(real.reported(&Reported::default()), real);
        let report = Reported {
            prompt: Some(u64::MAX),
            reasoning: Some(20_000),
            ..Reported::default()
        };
        let reported = real.reported(&report);
        assert_eq!(
            reported,
            Usage {
                prompt: u64::MAX,
                completion: 6,
                cached: 2,
                reasoning: 20_000
            }
        );
        assert_eq!(reported.total(), u64::MAX, "the total saturates");
    }

    #[test]
    fn first_chars_respects_characters() {
        assert_eq!(first_chars("héllo", 2), "hé");
        assert_eq!(first_chars("hi", 200), "hi");
    }
}
