//! The identifiers the fake hands out (request ids, reply tokens, message ids, quote tokens,
//! webhook event ids) and the shapes of LINE's own ids it checks (user, group and room ids,
//! retry keys).
//!
//! Fresh ids come from a process-wide counter passed through SplitMix64, seeded at random once:
//! SplitMix64 is a bijection, so no two ids of a process collide, and the seed makes two
//! processes (a restarted fake) unlikely to repeat each other's ids.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// 64 fresh bits; never the same twice in a process.
fn fresh_u64() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(now_ms());
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    splitmix64(seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fresh_u128() -> u128 {
    (u128::from(fresh_u64()) << 64) | u128::from(fresh_u64())
}

/// A request id in the UUID (version 4) form of `X-Line-Request-Id`.
pub(crate) fn request_id() -> String {
    let v = fresh_u128();
    // Version 4, variant 10xx, as a random UUID has them.
    let v = (v & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A reply token: 32 lowercase hex characters, as LINE's look.
pub(crate) fn reply_token() -> String {
    format!("{:032x}", fresh_u128())
}

/// A message id: an 18-digit decimal string.
pub(crate) fn message_id() -> String {
    format!(
        "{}",
        100_000_000_000_000_000 + fresh_u64() % 900_000_000_000_000_000
    )
}

/// A quote token: 43 base64url characters (32 bytes), as LINE's look.
pub(crate) fn quote_token() -> String {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&fresh_u64().to_be_bytes());
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A `webhookEventId`: a ULID (Crockford base32 of 48 bits of milliseconds, then 80 fresh bits).
pub(crate) fn webhook_event_id(timestamp_ms: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let random = fresh_u128() & ((1u128 << 80) - 1);
    let value = (u128::from(timestamp_ms & 0xffff_ffff_ffff) << 80) | random;
    (0..26)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (i * 5)) & 0x1f) as usize]))
        .collect()
}

/// `U`, `C` or `R` followed by 32 lowercase hex characters: a user, group or room id.
pub(crate) fn is_chat_id(id: &str) -> bool {
    matches!(id.as_bytes().first(), Some(b'U' | b'C' | b'R')) && is_hex_32(&id[1..])
}

/// `U` followed by 32 lowercase hex characters.
pub(crate) fn is_user_id(id: &str) -> bool {
    id.starts_with('U') && is_hex_32(&id[1..])
}

fn is_hex_32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A UUID in its hexadecimal 8-4-4-4-12 form, as `X-Line-Retry-Key` must be.
pub(crate) fn is_uuid(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A user id derived from `seed`: the same seed always gives the same customer.
pub(crate) fn stable_user_id(seed: &str) -> String {
    let high = fnv1a(seed.as_bytes());
    let low = fnv1a(&high.to_be_bytes());
    format!("U{high:016x}{low:016x}")
}

/// FNV-1a: a tiny stable hash (unlike `std`'s, the same in every process).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` since the epoch as an RFC 3339 UTC time, e.g. `2024-11-25T00:00:00.000Z`.
pub(crate) fn rfc3339(ms: u64) -> String {
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_have_line_shapes_and_do_not_repeat() {
        let id = request_id();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert_ne!(request_id(), request_id());

        let token = reply_token();
        assert_eq!(token.len(), 32);
        assert_ne!(reply_token(), reply_token());

        assert_eq!(message_id().len(), 18);
        assert_eq!(quote_token().len(), 43);

        let ulid = webhook_event_id(1_732_492_800_000);
        assert_eq!(ulid.len(), 26);
        assert!(ulid.starts_with("01JDG9WC00"), "{ulid}");
    }

    #[test]
    fn line_id_shapes_are_recognised() {
        assert!(is_chat_id("U4af4980629c0b2e7a1f5d3c8b6e9f0a1"));
        assert!(is_chat_id("Ca56f94637cc4347f90a25382909b24b9"));
        assert!(is_chat_id("Ra8dbf4673c4c812cd491258042226c99"));
        assert!(!is_chat_id("U4AF4980629C0B2E7A1F5D3C8B6E9F0A1"));
        assert!(!is_chat_id("X4af4980629c0b2e7a1f5d3c8b6e9f0a1"));
        assert!(!is_chat_id("U123"));
        assert!(!is_chat_id(""));
        assert!(!is_user_id("Ca56f94637cc4347f90a25382909b24b9"));
        assert!(is_user_id(&stable_user_id("customer 1")));
        assert_eq!(stable_user_id("a"), stable_user_id("a"));
        assert_ne!(stable_user_id("a"), stable_user_id("b"));
    }

    #[test]
    fn retry_keys_must_be_uuids() {
        assert!(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(is_uuid("123E4567-E89B-12D3-A456-426614174000"));
        assert!(!is_uuid("123e4567e89b12d3a456426614174000"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
        assert!(!is_uuid("retry-1"));
    }

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_732_492_800_000), "2024-11-25T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
