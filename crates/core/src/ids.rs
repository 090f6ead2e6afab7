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
mod tests {
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
