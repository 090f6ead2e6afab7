//! Deterministic embedding vectors, independent of any wire format: the same input always gives
//! the same unit-norm vector, and different inputs almost surely different ones.

/// Default dimensions for an embedding model name, as the real models have them.
pub(crate) fn default_dimensions(model: &str) -> usize {
    if model.contains("3-small") {
        1536
    } else if model.contains("3-large") {
        3072
    } else {
        1024
    }
}

/// A seed from the bytes of a text input (64-bit FNV-1a).
pub(crate) fn seed_text(text: &str) -> u64 {
    fnv1a(FNV_OFFSET, text.as_bytes())
}

/// A seed from a token-array input (64-bit FNV-1a over the tokens' little-endian bytes).
pub(crate) fn seed_tokens(tokens: &[u64]) -> u64 {
    tokens.iter().fold(FNV_OFFSET ^ 0x5a, |h, t| fnv1a(h, &t.to_le_bytes()))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A unit-norm vector of `dims` components drawn from a SplitMix64 stream seeded by `seed`.
pub(crate) fn unit_vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut state = seed;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // 24 random bits → [-1, 1), exactly representable in f32.
            ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_and_deterministic() {
        let a = unit_vector(seed_text("hello"), 1536);
        assert_eq!(a.len(), 1536);
        let norm: f64 = a.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(a, unit_vector(seed_text("hello"), 1536));
        assert_ne!(a, unit_vector(seed_text("hello!"), 1536));
        assert_ne!(seed_tokens(&[1, 2]), seed_tokens(&[2, 1]));
        assert_eq!(unit_vector(0, 1).len(), 1);
        assert!(unit_vector(7, 0).is_empty());
    }

    #[test]
    fn default_dimensions_follow_model_names() {
        assert_eq!(default_dimensions("text-embedding-3-small"), 1536);
        assert_eq!(default_dimensions("text-embedding-3-large"), 3072);
        assert_eq!(default_dimensions("text-embedding-ada-002"), 1024);
    }
}
