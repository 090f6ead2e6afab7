//! The operator's configuration: built-in defaults (`config/router-one.toml`), overridden by a
//! config file, then by `ROUTER_ONE_*` environment variables, then by command-line flags.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use router_one_core::Catalog;
use router_one_core::checkout::CheckoutConfig;
use router_one_payments::PaymentProviderConfig;
use router_one_providers::ProviderConfig;
use rust_decimal::Decimal;

const DEFAULTS: &str = include_str!("../../../config/router-one.toml");
const BUILT_IN_CATALOG: &str = include_str!("../../../catalog/models.toml");

/// The merged configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) catalog: Option<PathBuf>,
    pub(crate) max_body_bytes: usize,
    pub(crate) upstream_timeout_secs: u64,
    pub(crate) usage_batch: usize,
    pub(crate) default_output_tokens: u64,
    /// Most unrevoked inference keys one account may hold.
    pub(crate) max_keys_per_account: u32,
    pub(crate) http: Http,
    pub(crate) providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub(crate) checkout: CheckoutConfig,
    /// The gateway's public base URL; unset: `http://<listen>`.
    #[serde(default)]
    pub(crate) public_url: Option<String>,
    #[serde(default)]
    pub(crate) payments: BTreeMap<String, PaymentProviderConfig>,
    pub(crate) referrals: Referrals,
    #[serde(default)]
    pub(crate) database: Database,
    #[serde(default)]
    pub(crate) redis: Redis,
    #[serde(default)]
    pub(crate) cluster: Cluster,
    #[serde(default)]
    pub(crate) metrics: MetricsConfig,
    #[serde(default)]
    pub(crate) telemetry: TelemetryConfig,
}

/// `[telemetry]`: OpenTelemetry traces (docs/traces.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (`http://collector:4318`); unset: no traces.
    #[serde(default)]
    pub(crate) otlp_endpoint: Option<String>,
}

/// `[metrics]`: the Prometheus endpoint, on an address of its own (never the public port).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    /// Where `GET /metrics` is served; unset: no metrics listener.
    #[serde(default)]
    pub(crate) listen: Option<SocketAddr>,
}

/// `[redis]`: what cluster nodes coordinate rate limits through (never money).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redis {
    /// A `redis://` URL.
    #[serde(default)]
    pub(crate) url: Option<String>,
}

/// `[cluster]`: this gateway as one node of several sharing a PostgreSQL database.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
    /// The node's stable name; unset: a single node.
    #[serde(default)]
    pub(crate) node_id: Option<String>,
}

/// `[database]`: where accounts, keys, the ledger and usage records live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Database {
    /// A `postgres://` URL; unset: embedded SQLite in the data directory.
    #[serde(default)]
    pub(crate) url: Option<String>,
}

/// `[http]`: the edge (documented in `config/router-one.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http {
    pub(crate) header_read_timeout_secs: u64,
    pub(crate) keep_alive_timeout_secs: u64,
    /// 0: derived from the file-descriptor limit.
    pub(crate) max_connections: usize,
    /// After SIGTERM, how long new requests are still accepted while `GET /ready` says 503.
    pub(crate) drain_grace_secs: u64,
    pub(crate) shutdown_timeout_secs: u64,
    pub(crate) usage_flush_timeout_secs: u64,
    pub(crate) max_public_body_bytes: usize,
    pub(crate) trusted_proxies: Vec<IpAddr>,
}

/// `[referrals]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Referrals {
    /// The inviter's share of a referred top-up's token line, percent (a decimal string).
    pub(crate) commission_percent: Decimal,
}

impl Config {
    /// Defaults, then `file`, then the environment.
    pub(crate) fn load(file: Option<&Path>) -> Result<Config> {
        let mut merged: toml::Table = toml::from_str(DEFAULTS).context("built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
            let overrides: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
            merge(&mut merged, overrides);
        }
        for (var, key) in [
            ("ROUTER_ONE_LISTEN", "listen"),
            ("ROUTER_ONE_DATA_DIR", "data_dir"),
            ("ROUTER_ONE_CATALOG", "catalog"),
        ] {
            if let Ok(value) = std::env::var(var) {
                merged.insert(key.into(), toml::Value::String(value));
            }
        }
        for (var, table, key) in [
            ("ROUTER_ONE_DATABASE_URL", "database", "url"),
            ("ROUTER_ONE_REDIS_URL", "redis", "url"),
            ("ROUTER_ONE_NODE_ID", "cluster", "node_id"),
        ] {
            if let Ok(value) = std::env::var(var) {
                let section = merged
                    .entry(table)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(section) = section {
                    section.insert(key.into(), toml::Value::String(value));
                }
            }
        }
        if let Ok(value) = std::env::var("ROUTER_ONE_UPSTREAM_TIMEOUT_SECS") {
            let secs: i64 = value
                .parse()
                .context("ROUTER_ONE_UPSTREAM_TIMEOUT_SECS must be a whole number")?;
            merged.insert("upstream_timeout_secs".into(), toml::Value::Integer(secs));
        }
        let config: Config = merged.try_into().context("invalid configuration")?;
        for (name, provider) in &config.providers {
            if let Some(problem) = provider.problem() {
                anyhow::bail!("invalid configuration: [providers.{name}]: {problem}");
            }
        }
        config.checkout.validate().context("invalid [checkout] configuration")?;
        if config.http.header_read_timeout_secs == 0 || config.http.keep_alive_timeout_secs == 0 {
            anyhow::bail!(
                "invalid configuration: `http.header_read_timeout_secs` and `http.keep_alive_timeout_secs` must be at least 1"
            );
        }
        let percent = config.referrals.commission_percent;
        if percent.is_sign_negative() || percent > Decimal::ONE_HUNDRED {
            anyhow::bail!("invalid configuration: `referrals.commission_percent` must be between 0 and 100");
        }
        Ok(config)
    }

    /// The catalog file named by the config, or the built-in copy.
    pub(crate) fn catalog(&self) -> Result<Catalog> {
        let text = match &self.catalog {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("reading catalog {}", path.display()))?
            }
            None => BUILT_IN_CATALOG.to_owned(),
        };
        Catalog::from_toml(&text).context("loading the model catalog")
    }
}

/// Deep-merges tables: a key in `over` replaces the same key in `base`, tables merge.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_a_file_overrides_only_what_it_sets() {
        let dir = std::env::temp_dir().join(format!("r1-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "upstream_timeout_secs = 2\n[providers.openai]\nbase_url = \"http://127.0.0.1:1/v1\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.upstream_timeout_secs, 2);
        assert_eq!(c.providers["openai"].base_url, "http://127.0.0.1:1/v1");
        assert_eq!(c.providers["openai"].api_key_env, "OPENAI_API_KEY");
        assert!(c.providers.contains_key("groq"));
        assert!(c.catalog().unwrap().models().len() >= 25);
        assert!(c.checkout.channels.contains_key("card"));
    }
}
