//! What a request costs: token counts × posted rates (promise 4 is computed here and only here).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Usd;

/// A model's posted rates, in USD per one million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedRates {
    /// USD per 1M input tokens not served from the provider's prompt cache.
    pub input_per_mtok: Decimal,
    /// USD per 1M input tokens read from the provider's prompt cache.
    pub cached_input_per_mtok: Decimal,
    /// USD per 1M input tokens written to the provider's prompt cache (Anthropic's cache
    /// writes); the input rate for a model that posts none.
    pub cache_write_per_mtok: Decimal,
    /// USD per 1M output tokens, reasoning tokens included.
    pub output_per_mtok: Decimal,
}

/// Token counts of one request, as the upstream reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// All prompt tokens, cached ones included (OpenAI's `prompt_tokens`).
    pub prompt_tokens: u64,
    /// The part of `prompt_tokens` read from the prompt cache.
    pub cached_tokens: u64,
    /// The part of `prompt_tokens` written to the prompt cache (Anthropic's
    /// `cache_creation_input_tokens`); 0 for vendors that do not bill writes apart.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// All output tokens, reasoning included (OpenAI's `completion_tokens`).
    pub completion_tokens: u64,
    /// The part of `completion_tokens` spent on reasoning.
    pub reasoning_tokens: u64,
}

impl PostedRates {
    /// The cost of `usage` at these rates:
    /// `(prompt − cached − written) × input + cached × cached_input + written × cache_write +
    /// completion × output`, per 1M tokens, computed exactly and rounded once by the rule in
    /// [`crate::money`]. Cache reads are clamped to the prompt, cache writes to what remains.
    ///
    /// Returns `None` only if the amount overflows what can be stored (≈ $922 million).
    pub fn cost(&self, usage: &TokenUsage) -> Option<Usd> {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let uncached = usage.prompt_tokens - cached - written;
        let total = Decimal::from(uncached).checked_mul(self.input_per_mtok)?
            + Decimal::from(cached).checked_mul(self.cached_input_per_mtok)?
            + Decimal::from(written).checked_mul(self.cache_write_per_mtok)?
            + Decimal::from(usage.completion_tokens).checked_mul(self.output_per_mtok)?;
        Usd::from_decimal_rounded(total / Decimal::from(1_000_000))
    }

    /// The most `max_prompt_tokens` in and `max_output_tokens` out could cost: nothing read
    /// from the cache, and every prompt token at the dearer of the input and cache-write rates.
    pub fn worst_case(&self, max_prompt_tokens: u64, max_output_tokens: u64) -> Option<Usd> {
        let all_written = self.cache_write_per_mtok > self.input_per_mtok;
        self.cost(&TokenUsage {
            prompt_tokens: max_prompt_tokens,
            cached_tokens: 0,
            cache_write_tokens: if all_written { max_prompt_tokens } else { 0 },
            completion_tokens: max_output_tokens,
            reasoning_tokens: 0,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rates(i: &str, c: &str, o: &str) -> PostedRates {
        PostedRates {
            input_per_mtok: Decimal::from_str_exact(i).unwrap(),
            cached_input_per_mtok: Decimal::from_str_exact(c).unwrap(),
            cache_write_per_mtok: Decimal::from_str_exact(i).unwrap(),
            output_per_mtok: Decimal::from_str_exact(o).unwrap(),
        }
    }

    #[test]
    fn cost_of_a_typical_request() {
        let r = rates("2.50", "1.25", "10.00");
        let u = TokenUsage {
            prompt_tokens: 1000,
            cached_tokens: 200,
            cache_write_tokens: 0,
            completion_tokens: 500,
            reasoning_tokens: 0,
        };
        // 800 × 2.5e-6 + 200 × 1.25e-6 + 500 × 1e-5 = 0.002 + 0.00025 + 0.005
        assert_eq!(r.cost(&u).unwrap().to_string(), "0.00725");
    }

    #[test]
    fn cached_beyond_prompt_is_clamped() {
        let r = rates("1", "0.5", "2");
        let u = TokenUsage {
            prompt_tokens: 10,
            cached_tokens: 50,
            cache_write_tokens: 0,
            completion_tokens: 0,
            reasoning_tokens: 0,
        };
        assert_eq!(r.cost(&u).unwrap().to_string(), "0.000005");
    }

    #[test]
    fn cache_writes_are_billed_at_the_cache_write_rate() {
        let mut r = rates("2.00", "0.10", "10.00");
        r.cache_write_per_mtok = Decimal::from_str_exact("2.50").unwrap();
        let u = TokenUsage {
            prompt_tokens: 1000,
            cached_tokens: 100,
            cache_write_tokens: 600,
            completion_tokens: 10,
            reasoning_tokens: 0,
        };
        // 300 × 2e-6 + 100 × 1e-7 + 600 × 2.5e-6 + 10 × 1e-5 = 0.0006 + 0.00001 + 0.0015 + 0.0001
        assert_eq!(r.cost(&u).unwrap().to_string(), "0.00221");
        // The worst case prices every prompt token at the dearer rate.
        assert_eq!(r.worst_case(1000, 10).unwrap().to_string(), "0.0026");
        // Writes beyond what the reads leave are clamped: 100 × 1e-7 + 900 × 2.5e-6 + 10 × 1e-5.
        let over = TokenUsage {
            cache_write_tokens: 5000,
            ..u
        };
        assert_eq!(r.cost(&over).unwrap().to_string(), "0.00236");
    }

    proptest! {
        /// Cost is additive in tokens to the unit when rates have at most 4 decimals (no rounding).
        #[test]
        fn cost_is_exact_and_additive(p in 0u64..10_000_000, c in 0u64..10_000_000, o in 0u64..10_000_000,
                                      ri in 0u32..100_000, ro in 0u32..100_000) {
            let r = PostedRates {
                input_per_mtok: Decimal::new(ri.into(), 4),
                cached_input_per_mtok: Decimal::new((ri / 2).into(), 4),
                cache_write_per_mtok: Decimal::new(ri.into(), 4),
                output_per_mtok: Decimal::new(ro.into(), 4),
            };
            let a = r.cost(&TokenUsage { prompt_tokens: p, cached_tokens: 0, cache_write_tokens: 0, completion_tokens: 0, reasoning_tokens: 0 }).unwrap();
            let b = r.cost(&TokenUsage { prompt_tokens: 0, cached_tokens: 0, cache_write_tokens: 0, completion_tokens: o, reasoning_tokens: 0 }).unwrap();
            let both = r.cost(&TokenUsage { prompt_tokens: p, cached_tokens: c.min(p), cache_write_tokens: 0, completion_tokens: o, reasoning_tokens: 0 }).unwrap();
            let cached_part = r.cost(&TokenUsage { prompt_tokens: c.min(p), cached_tokens: c.min(p), cache_write_tokens: 0, completion_tokens: 0, reasoning_tokens: 0 }).unwrap();
            let uncached_part = r.cost(&TokenUsage { prompt_tokens: p - c.min(p), cached_tokens: 0, cache_write_tokens: 0, completion_tokens: 0, reasoning_tokens: 0 }).unwrap();
            prop_assert_eq!(both.units(), uncached_part.units() + cached_part.units() + b.units());
            prop_assert!(a.units() >= uncached_part.units());
        }
    }
}
