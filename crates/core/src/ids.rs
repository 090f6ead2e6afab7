//! Identifiers: time-ordered (UUIDv7) with a readable prefix, so ids sort by creation time and
//! a usage cursor can be an id.

use uuid::Uuid;

/// A new id `"{prefix}_{uuidv7 simple hex}"`, e.g. `req_0193…`.
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 33);
    s.push_str(prefix);
    s.push('_');
    s.push_str(Uuid::now_v7().simple().encode_lower(&mut Uuid::encode_buffer()));
    s
}

/// Current time as microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_creation() {
        let a = super::new_id("req");
        let b = super::new_id("req");
        assert!(a.starts_with("req_") && a.len() == 36);
        assert!(a < b);
    }
}
