//! Anthropic's prompt cache, simulated: the prompt up to the last `cache_control` breakpoint
//! (the system prompt, then whole messages up to the last one with a breakpoint; tools count no
//! tokens in the simulator's rule) is *written* the first time this server sees it for a model
//! (`cache_creation_input_tokens`) and *read* every later time (`cache_read_input_tokens`).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use super::request::{Content, Message};
use crate::tokens::{PER_MESSAGE, count_words};

/// The prefixes seen so far, by hash.
#[derive(Debug, Default)]
pub(crate) struct PromptCache {
    seen: Mutex<HashSet<u64>>,
}

/// What one request did with the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct CacheUse {
    /// Tokens written (first sight of the prefix).
    pub(super) written: u64,
    /// Tokens read (the prefix was seen before).
    pub(super) read: u64,
}

impl PromptCache {
    /// Looks up (and remembers) the request's cached prefix.
    pub(super) fn lookup(&self, model: &str, system: Option<&Content<'_>>, messages: &[Message<'_>]) -> CacheUse {
        let Some((tokens, hash)) = prefix(model, system, messages) else {
            return CacheUse::default();
        };
        // A poisoned lock only means another request panicked mid-insert: the set is still sound.
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.insert(hash) {
            CacheUse {
                written: tokens,
                read: 0,
            }
        } else {
            CacheUse {
                written: 0,
                read: tokens,
            }
        }
    }
}

/// The tokens and hash of the prompt up to the last breakpoint, if there is one.
fn prefix(model: &str, system: Option<&Content<'_>>, messages: &[Message<'_>]) -> Option<(u64, u64)> {
    let last = messages.iter().rposition(|m| m.content().has_breakpoint());
    let system_marked = system.is_some_and(Content::has_breakpoint);
    if last.is_none() && !system_marked {
        return None;
    }
    let mut hasher = DefaultHasher::new();
    model.hash(&mut hasher);
    let mut tokens = 0u64;
    if let Some(system) = system {
        let text = system.text();
        text.hash(&mut hasher);
        tokens = tokens.saturating_add(PER_MESSAGE + count_words(&text));
    }
    for message in messages.iter().take(last.map_or(0, |i| i + 1)) {
        let text = message.content().text();
        message.role().hash(&mut hasher);
        text.hash(&mut hasher);
        tokens = tokens.saturating_add(PER_MESSAGE + count_words(&text));
    }
    Some((tokens, hasher.finish()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::request::MessagesRequest;
    use super::*;

    fn lookup(cache: &PromptCache, body: &str) -> CacheUse {
        let r: MessagesRequest<'_> = serde_json::from_str(body).unwrap();
        cache.lookup("claude", r.system.as_ref(), r.messages.as_deref().unwrap())
    }

    #[test]
    fn the_prefix_is_written_once_then_read() {
        let cache = PromptCache::default();
        let body = r#"{"system":[{"type":"text","text":"a b c","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":"hello there"}]}"#;
        assert_eq!(
            lookup(&cache, body),
            CacheUse {
                written: 4 + 3,
                read: 0
            }
        );
        assert_eq!(
            lookup(&cache, body),
            CacheUse {
                written: 0,
                read: 4 + 3
            }
        );
        // A breakpoint on a message covers the system prompt and every message up to it.
        let later = r#"{"system":"a b c","messages":[{"role":"user","content":[{"type":"text","text":"x y","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"z"}]}"#;
        assert_eq!(
            lookup(&cache, later),
            CacheUse {
                written: (4 + 3) + (4 + 2),
                read: 0
            }
        );
        let none = r#"{"messages":[{"role":"user","content":"no breakpoint"}]}"#;
        assert_eq!(lookup(&cache, none), CacheUse::default());
    }
}
