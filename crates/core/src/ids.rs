//! Identifiers: UUIDv7 with a readable prefix, so ids sort by creation time to the millisecond.

use rand::Rng;
use uuid::{Builder, Uuid};

/// A new id `"{prefix}_{uuidv7 simple hex}"`, e.g. `req_0193…`.
///
/// The random bits come from the thread's generator (seeded once from the OS) rather than a
/// system call per id: ids are minted on every request.
pub fn new_id(prefix: &str) -> String {
    let millis = u64::try_from(now_us() / 1_000).unwrap_or_default();
    let random: [u8; 10] = rand::rng().random();
    let uuid = Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    let mut s = String::with_capacity(prefix.len() + 33);
    s.push_str(prefix);
    s.push('_');
    s.push_str(uuid.simple().encode_lower(&mut Uuid::encode_buffer()));
    s
}

/// When an id made by [`new_id`] with `prefix` was minted, in ms since the Unix epoch; `None`
/// for anything else (a client may send any string where an id is expected).
pub fn minted_at_ms(id: &str, prefix: &str) -> Option<u64> {
    let hex = id.strip_prefix(prefix)?.strip_prefix('_')?;
    if hex.len() != 32 {
        return None;
    }
    let uuid = Uuid::try_parse(hex).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
    Some(
        seconds
            .saturating_mul(1_000)
            .saturating_add(u64::from(nanos / 1_000_000)),
    )
}

/// An RFC 3339 timestamp (UTC) of µs since the epoch, as the API shows times (empty if out of
/// the representable range, which our own clock never is).
pub fn rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Current time as microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_id_tells_when_it_was_minted_and_nothing_else_does() {
        let before = u64::try_from(now_us() / 1_000).unwrap();
        let id = new_id("req");
        let after = u64::try_from(now_us() / 1_000).unwrap();
        let at = minted_at_ms(&id, "req").unwrap();
        assert!(before <= at && at <= after, "{before} {at} {after}");
        assert_eq!(minted_at_ms(&id, "key"), None);
        for bad in [
            "req_",
            "req_zz",
            "req",
            "",
            "req_0193abcd",
            &id[..id.len() - 1],
            &format!("{id}0"),
        ] {
            assert_eq!(minted_at_ms(bad, "req"), None, "{bad}");
        }
        // A v4 uuid is not one of ours.
        assert_eq!(minted_at_ms("req_9f1c2d3e4b5a46789abcdef012345678", "req"), None);
    }

    #[test]
    fn ids_are_distinct_v7_and_sort_by_millisecond() {
        let a = super::new_id("req");
        let b = super::new_id("req");
        assert!(a.starts_with("req_") && a.len() == 36);
        assert_ne!(a, b);
        assert_eq!(
            uuid::Uuid::parse_str(&a[4..]).map(|u| u.get_version_num()).ok(),
            Some(7)
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(a < super::new_id("req"));
    }
}
