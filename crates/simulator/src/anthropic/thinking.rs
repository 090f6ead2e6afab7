//! Extended thinking, simulated: with `thinking` on, the answer starts with one `thinking` block
//! whose signature the simulator can verify. Earlier thinking blocks sent back must carry the
//! signature it gave them (else a 400, as Anthropic refuses a tampered block); when they do, the
//! new thinking says `signature ok`, so a test can see the blocks reached the upstream intact.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::request::Message;
use crate::tokens::count_words;

/// One thinking block of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Thinking {
    pub(super) text: String,
    pub(super) signature: String,
}

impl Thinking {
    /// Its tokens (billed as output).
    pub(super) fn tokens(&self) -> u64 {
        count_words(&self.text)
    }
}

/// The signature the simulator gives a thinking text.
fn sign(text: &str) -> String {
    let mut hasher = DefaultHasher::new();
    "router-one-sim-thinking".hash(&mut hasher);
    text.hash(&mut hasher);
    format!("simsig{:016x}", hasher.finish())
}

/// The thinking of a request that asked for it; `Err` names an earlier block whose signature
/// does not verify.
pub(super) fn think(messages: &[Message<'_>]) -> Result<Thinking, String> {
    let mut earlier = 0;
    for (i, message) in messages.iter().enumerate() {
        for block in message.content().thinking_blocks() {
            let text = block.thinking.as_deref().unwrap_or_default();
            if block.signature.as_deref() != Some(&*sign(text)) {
                return Err(format!("messages.{i}.content: Invalid `signature` in `thinking` block"));
            }
            earlier += 1;
        }
    }
    let mut text = String::from("Simulated thinking about the request.");
    if earlier > 0 {
        text.push_str(" Earlier thinking signature ok.");
    }
    let signature = sign(&text);
    Ok(Thinking { text, signature })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::request::MessagesRequest;
    use super::*;

    fn think_about(body: &str) -> Result<Thinking, String> {
        let r: MessagesRequest<'_> = serde_json::from_str(body).unwrap();
        think(r.messages.as_deref().unwrap())
    }

    #[test]
    fn signed_blocks_come_back_verified_and_tampered_ones_are_refused() {
        let first = think_about(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(!first.text.contains("signature ok"));
        let back = |text: &str, signature: &str| {
            let block = serde_json::json!({"type": "thinking", "thinking": text, "signature": signature});
            format!(
                r#"{{"messages":[{{"role":"user","content":"hi"}},{{"role":"assistant","content":[{block}]}},{{"role":"user","content":"more"}}]}}"#
            )
        };
        let second = think_about(&back(&first.text, &first.signature)).unwrap();
        assert!(second.text.contains("signature ok"), "{}", second.text);
        assert!(think_about(&back("tampered", &first.signature)).is_err());
    }
}
