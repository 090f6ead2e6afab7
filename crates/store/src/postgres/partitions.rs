//! The monthly partitions of `usage_records`: `usage_records_YYYYMM` holds the records created
//! in that UTC month, `usage_records_default` anything no partition covers (a record is never
//! refused for its time). A month's partition is created ahead of it — at connect and by the
//! operator's daily call — so records normally never reach the DEFAULT partition; those that
//! did (a clock far off, a server down for months) move into their month's partition when it
//! is created, since PostgreSQL refuses a partition whose range DEFAULT still holds rows of.

use router_one_core::store::{StoreError, StoreResult};
use sqlx::{PgConnection, PgPool};
use time::{Month, OffsetDateTime};

use super::{TxResult, advisory_lock, lock, retrying};

/// The partitions kept ready: this month and the next two.
const MONTHS_AHEAD: u8 = 3;

/// One month's partition.
#[derive(Debug, PartialEq, Eq)]
struct MonthPartition {
    /// `usage_records_YYYYMM`.
    name: String,
    /// Its first µs.
    from_us: i64,
    /// The first µs of the next month.
    to_us: i64,
}

/// The first µs of a UTC month.
fn month_start_us(year: i32, month: Month) -> StoreResult<i64> {
    let date = time::Date::from_calendar_date(year, month, 1)
        .map_err(|e| StoreError::Database(format!("month out of range: {e}")))?;
    let nanos = date.midnight().assume_utc().unix_timestamp_nanos() / 1000;
    i64::try_from(nanos).map_err(|_| StoreError::Database("month out of range".into()))
}

/// The partitions of the month containing `now_us` and the following ones, [`MONTHS_AHEAD`] in
/// all.
fn months_from(now_us: i64) -> StoreResult<Vec<MonthPartition>> {
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_us) * 1000)
        .map_err(|e| StoreError::Database(format!("time out of range: {e}")))?;
    let (mut year, mut month) = (now.year(), now.month());
    let mut months = Vec::new();
    for _ in 0..MONTHS_AHEAD {
        let (next_year, next_month) = match month {
            Month::December => (year + 1, Month::January),
            m => (year, m.next()),
        };
        months.push(MonthPartition {
            name: format!("usage_records_{year:04}{:02}", u8::from(month)),
            from_us: month_start_us(year, month)?,
            to_us: month_start_us(next_year, next_month)?,
        });
        (year, month) = (next_year, next_month);
    }
    Ok(months)
}

/// Creates the missing partitions around `now_us` (see [`super::PgStore::ensure_partitions`]).
pub(super) async fn ensure(pool: &PgPool, now_us: i64) -> StoreResult<()> {
    let months = months_from(now_us)?;
    retrying("ensure_partitions", || ensure_once(pool, &months)).await
}

/// One attempt: under an advisory lock, so nodes starting together do not race to create the
/// same partition.
async fn ensure_once(pool: &PgPool, months: &[MonthPartition]) -> TxResult<()> {
    let mut tx = pool.begin().await?;
    advisory_lock(&mut tx, lock::PARTITIONS).await?;
    for month in months {
        create_partition(&mut tx, month).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Creates one month's partition unless it exists, moving into it the rows DEFAULT holds for
/// its month. Names and bounds are formatted from integers (DDL takes no bind parameters).
async fn create_partition(conn: &mut PgConnection, month: &MonthPartition) -> TxResult<()> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&month.name)
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        return Ok(());
    }
    let MonthPartition { name, from_us, to_us } = month;
    let statements = [
        "CREATE TEMPORARY TABLE usage_records_moving (LIKE usage_records) ON COMMIT DROP".to_owned(),
        format!(
            "WITH moved AS (DELETE FROM usage_records_default \
             WHERE created_at_us >= {from_us} AND created_at_us < {to_us} RETURNING *) \
             INSERT INTO usage_records_moving SELECT * FROM moved"
        ),
        format!("CREATE TABLE {name} PARTITION OF usage_records FOR VALUES FROM ({from_us}) TO ({to_us})"),
        format!("INSERT INTO {name} SELECT * FROM usage_records_moving"),
        "DROP TABLE usage_records_moving".to_owned(),
    ];
    for sql in statements {
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    tracing::info!(partition = %name, "usage partition created");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn three_utc_months_across_a_year_end() {
        let nov_25_2026 = 1_795_608_000_000_000; // 2026-11-25T08:00:00Z
        let months = months_from(nov_25_2026).unwrap();
        let names: Vec<&str> = months.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["usage_records_202611", "usage_records_202612", "usage_records_202701"]
        );
        assert_eq!(months[0].from_us, 1_793_491_200_000_000); // 2026-11-01T00:00:00Z
        assert_eq!(months[0].to_us, months[1].from_us);
        assert_eq!(months[2].to_us, 1_801_440_000_000_000); // 2027-02-01T00:00:00Z
    }
}
