//! The model catalog: every public model id, its posted rates, limits and the provider channels
//! that serve it. Loaded from TOML data (`catalog/models.toml`) so a rate changes without a rebuild.
//!
//! Promise 1 (no model swapping) rests on this shape: a public id maps to routes that all name the
//! *same* upstream model; there is no field by which a request could land on another model.

use std::collections::HashMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::pricing::PostedRates;

/// What a model does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat completions.
    Chat,
    /// Embeddings.
    Embedding,
}

/// One provider channel serving a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The provider's name in the operator's config (`openai`, `groq`, …).
    pub provider: String,
    /// The model id that provider's API expects.
    pub upstream_id: String,
}

/// One catalog entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The public id clients send.
    pub id: String,
    /// The model family (`gpt`, `claude`, `gemini`, `deepseek`, `mistral`, `llama`).
    pub family: String,
    /// Chat or embedding.
    pub kind: ModelKind,
    /// Context window in tokens.
    pub context_window: u64,
    /// Maximum output tokens.
    pub max_output: u64,
    /// Output tokens reserved for (and sent upstream as the limit of) a request that names no
    /// `max_tokens`; absent: the operator's `default_output_tokens`. Never above `max_output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_output: Option<u64>,
    /// USD per 1M input tokens (a decimal string in TOML: a float is refused).
    #[serde(deserialize_with = "decimal_string")]
    pub input_per_mtok: Decimal,
    /// USD per 1M cached input tokens.
    #[serde(deserialize_with = "decimal_string")]
    pub cached_input_per_mtok: Decimal,
    /// USD per 1M input tokens written to the prompt cache (Anthropic's cache writes, 5-minute
    /// TTL); absent: writes are billed at the input rate, as by vendors that bill none apart.
    #[serde(
        default,
        deserialize_with = "optional_decimal_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write_per_mtok: Option<Decimal>,
    /// USD per 1M output tokens.
    #[serde(deserialize_with = "decimal_string")]
    pub output_per_mtok: Decimal,
    /// Supports tools / function calling.
    #[serde(default)]
    pub tools: bool,
    /// Accepts image input.
    #[serde(default)]
    pub vision: bool,
    /// Has reasoning / extended thinking.
    #[serde(default)]
    pub reasoning: bool,
    /// Where the posted rates come from.
    #[serde(default)]
    pub source: String,
    /// Provider channels serving this model, in order of preference.
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
}

/// A rate must be a decimal *string*: a TOML float has already lost exactness when parsed.
fn decimal_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let s = String::deserialize(deserializer)?;
    Decimal::from_str_exact(s.trim()).map_err(|_| serde::de::Error::custom(format!("`{s}` is not a decimal number")))
}

fn optional_decimal_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
    decimal_string(deserializer).map(Some)
}

impl Model {
    /// The cache-write rate: the posted one, else the input rate.
    pub fn cache_write_rate(&self) -> Decimal {
        self.cache_write_per_mtok.unwrap_or(self.input_per_mtok)
    }

    /// The posted rates of this model.
    pub fn rates(&self) -> PostedRates {
        PostedRates {
            input_per_mtok: self.input_per_mtok,
            cached_input_per_mtok: self.cached_input_per_mtok,
            cache_write_per_mtok: self.cache_write_rate(),
            output_per_mtok: self.output_per_mtok,
        }
    }
}

/// Why a catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not valid TOML of the expected shape.
    #[error("catalog is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    /// The same id twice.
    #[error("model id `{0}` appears twice")]
    DuplicateId(String),
    /// A model that no provider serves.
    #[error("model `{0}` has no route")]
    NoRoute(String),
    /// A negative rate.
    #[error("model `{0}` has a negative rate")]
    NegativeRate(String),
}

/// The loaded catalog, indexed by public id.
#[derive(Debug, Default)]
pub struct Catalog {
    models: Vec<Arc<Model>>,
    by_id: HashMap<String, Arc<Model>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(rename = "model")]
    models: Vec<Model>,
}

impl Catalog {
    /// Parses and validates catalog TOML.
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        Catalog::new(file.models)
    }

    /// Builds a catalog from entries, validating ids, routes and rates.
    pub fn new(models: Vec<Model>) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::default();
        for model in models {
            if model.routes.is_empty() {
                return Err(CatalogError::NoRoute(model.id));
            }
            if model.rates_are_negative() {
                return Err(CatalogError::NegativeRate(model.id));
            }
            let model = Arc::new(model);
            if catalog.by_id.insert(model.id.clone(), model.clone()).is_some() {
                return Err(CatalogError::DuplicateId(model.id.clone()));
            }
            catalog.models.push(model);
        }
        Ok(catalog)
    }

    /// The model with this public id.
    pub fn get(&self, id: &str) -> Option<&Arc<Model>> {
        self.by_id.get(id)
    }

    /// Every model, in file order.
    pub fn models(&self) -> &[Arc<Model>] {
        &self.models
    }
}

impl Model {
    fn rates_are_negative(&self) -> bool {
        [
            self.input_per_mtok,
            self.cached_input_per_mtok,
            self.cache_write_rate(),
            self.output_per_mtok,
        ]
        .iter()
        .any(Decimal::is_sign_negative)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ONE: &str = r#"
        [[model]]
        id = "m"
        family = "gpt"
        kind = "chat"
        context_window = 10
        max_output = 5
        input_per_mtok = "1.5"
        cached_input_per_mtok = "0.75"
        output_per_mtok = "6"
        [[model.route]]
        provider = "openai"
        upstream_id = "m-2025"
    "#;

    #[test]
    fn loads_a_model_with_its_route() {
        let c = Catalog::from_toml(ONE).unwrap();
        let m = c.get("m").unwrap();
        assert_eq!(m.routes[0].upstream_id, "m-2025");
        assert_eq!(m.rates().input_per_mtok.to_string(), "1.5");
        // No posted cache-write rate: writes cost what input costs.
        assert_eq!(m.rates().cache_write_per_mtok.to_string(), "1.5");
        let posted = ONE.replace("output_per_mtok", "cache_write_per_mtok = \"1.875\"\noutput_per_mtok");
        let c = Catalog::from_toml(&posted).unwrap();
        assert_eq!(c.get("m").unwrap().rates().cache_write_per_mtok.to_string(), "1.875");
    }

    #[test]
    fn refuses_duplicates_and_float_rates() {
        let twice = format!("{ONE}{ONE}");
        assert!(matches!(Catalog::from_toml(&twice), Err(CatalogError::DuplicateId(_))));
        let float = ONE.replace("\"1.5\"", "1.5");
        assert!(Catalog::from_toml(&float).is_err());
    }

    #[test]
    fn the_shipped_catalog_is_valid_and_large_enough() {
        let text = include_str!("../../../catalog/models.toml");
        let c = Catalog::from_toml(text).unwrap();
        assert!(c.models().iter().filter(|m| m.kind == ModelKind::Chat).count() >= 25);
        for family in ["gpt", "claude", "gemini", "deepseek", "mistral", "llama"] {
            assert!(c.models().iter().any(|m| m.family == family), "no {family} model");
        }
    }
}
