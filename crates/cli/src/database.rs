//! Which store `serve` and `admin` open: the data directory's embedded SQLite file (the default:
//! one node, nothing to set up), or the PostgreSQL database a URL names (`--database`,
//! `ROUTER_ONE_DATABASE_URL` or `[database] url`, in that order).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use router_one_core::store::Store;
use router_one_store::{PgStore, SqliteStore};

use crate::config::Config;

/// The SQLite file's name inside the data directory.
const SQLITE_FILE: &str = "router-one.db";

/// How often a PostgreSQL gateway makes sure next months' usage partitions exist.
const PARTITION_CHECK: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// An open store.
pub(crate) enum Database {
    /// `<data dir>/router-one.db`.
    Sqlite(Arc<SqliteStore>),
    /// A PostgreSQL database.
    Postgres(Arc<PgStore>),
}

/// Held while this process serves a PostgreSQL database ([`Database::claim_serving`]).
pub(crate) struct ServingClaim {
    _claim: router_one_store::SingleNodeClaim,
}

impl std::ops::Deref for Database {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        match self {
            Database::Sqlite(store) => store.as_ref(),
            Database::Postgres(store) => store.as_ref(),
        }
    }
}

/// Where the store is: the flag's URL, else the config's (which the environment overrides),
/// else `None` for the data directory's SQLite file. A URL that is not PostgreSQL's is refused
/// here, before anything is opened.
pub(crate) fn url(config: &Config, flag: Option<String>) -> Result<Option<String>> {
    let Some(url) = flag.or_else(|| config.database.url.clone()) else {
        return Ok(None);
    };
    let url = url.trim().to_owned();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "the database URL must be postgres://… or postgresql://… (got `{}`); without one, the \
             gateway keeps its data in the data directory's SQLite file",
            redacted(&url)
        );
    }
    Ok(Some(url))
}

impl Database {
    /// Opens the database at `url`, or (`None`) the SQLite file in `data_dir` (creating the
    /// directory), and brings its schema up to date.
    pub(crate) async fn open(url: Option<&str>, data_dir: &Path) -> Result<Database> {
        match url {
            Some(url) => {
                let store = PgStore::connect(url)
                    .await
                    .with_context(|| format!("opening the PostgreSQL database {}", redacted(url)))?;
                Ok(Database::Postgres(Arc::new(store)))
            }
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("creating data directory {}", data_dir.display()))?;
                let store = SqliteStore::open(&data_dir.join(SQLITE_FILE))
                    .await
                    .context("opening the database")?;
                Ok(Database::Sqlite(Arc::new(store)))
            }
        }
    }

    /// The store behind the trait the server and the admin commands use.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite(store) => store.clone(),
            Database::Postgres(store) => store.clone(),
        }
    }

    /// The node registry and budget leases, which only PostgreSQL keeps.
    pub(crate) fn cluster_store(&self) -> Option<Arc<dyn router_one_core::cluster::ClusterStore>> {
        match self {
            Database::Sqlite(_) => None,
            Database::Postgres(store) => Some(store.clone()),
        }
    }

    /// Closes every connection (SQLite checkpoints its WAL).
    pub(crate) async fn close(&self) {
        match self {
            Database::Sqlite(store) => store.close().await,
            Database::Postgres(store) => store.close().await,
        }
    }

    /// On PostgreSQL, makes sure no other gateway serves the same database, and keeps it so
    /// until the returned claim is dropped (the process ends): the spend caps and balances
    /// are held in this process's memory, so two gateways on one database would each let a
    /// key spend its whole cap. Several nodes on one database come with budget leases
    /// (docs/deploy.md); until then a second one refuses to start with this error. On SQLite
    /// the data directory's lock (taken before) is the same guard.
    pub(crate) async fn claim_serving(&self) -> Result<Option<ServingClaim>> {
        match self {
            Database::Sqlite(_) => Ok(None),
            Database::Postgres(store) => {
                let claim = router_one_store::claim_single_node(store.pool())
                    .await
                    .context("claiming the database for this gateway")?;
                match claim {
                    Some(claim) => Ok(Some(ServingClaim { _claim: claim })),
                    None => bail!(
                        "another gateway already serves this PostgreSQL database; one gateway per \
                         database until budget leases let several share it (docs/deploy.md)"
                    ),
                }
            }
        }
    }

    /// On PostgreSQL, keeps next months' usage partitions made ahead of time: once a day
    /// (connecting made the current month's and the next two). A record outside every month
    /// partition lands in the default one, so a missed run costs query speed, never a record.
    pub(crate) fn spawn_maintenance(&self) {
        let Database::Postgres(store) = self else {
            return;
        };
        let store = store.clone();
        tokio::spawn(async move {
            let mut daily = tokio::time::interval(PARTITION_CHECK);
            daily.tick().await; // the first tick is now: connecting just did it
            loop {
                daily.tick().await;
                if let Err(e) = store.ensure_partitions(router_one_core::ids::now_us()).await {
                    tracing::warn!(error = %e, "creating next months' usage partitions failed; retrying tomorrow");
                }
            }
        });
    }

    /// For the log: which database, never a password.
    pub(crate) fn describe(&self, url: Option<&str>, data_dir: &Path) -> String {
        match (self, url) {
            (Database::Postgres(_), Some(url)) => redacted(url),
            _ => data_dir.join(SQLITE_FILE).display().to_string(),
        }
    }
}

/// `url` without the password of its user part (`postgres://u:secret@h/db` → `postgres://u:…@h/db`),
/// so it can be logged or shown in an error.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The user part ends at the last `@` before the first `/` (a password may hold `@`s only
    // percent-encoded, but be generous).
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let (user_part, host_part) = rest.split_at(at);
    match user_part.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:…{host_part}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redacted("postgres://router:s3cr%40t@db.internal:5432/r1"),
            "postgres://router:…@db.internal:5432/r1"
        );
        assert_eq!(
            redacted("postgres://router@db.internal/r1"),
            "postgres://router@db.internal/r1"
        );
        assert_eq!(
            redacted("postgres://db.internal/r1?user=x"),
            "postgres://db.internal/r1?user=x"
        );
        assert_eq!(redacted("postgresql://a:b@h/db?x=@"), "postgresql://a:…@h/db?x=@");
    }

    #[test]
    fn only_postgres_urls_are_taken() {
        let config = Config::load(None).unwrap();
        assert_eq!(
            url(&config, Some(" postgres://h/db ".into())).unwrap().as_deref(),
            Some("postgres://h/db")
        );
        let refused = url(&config, Some("mysql://u:pw@h/db".into())).unwrap_err().to_string();
        assert!(refused.contains("postgres://"), "{refused}");
        assert!(!refused.contains("pw"), "{refused}");
    }
}
