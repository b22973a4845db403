//! Markers tie what the load generator sent to what it later sees: every customer message
//! carries `lg-{run}-{n}` (`n` numbers the run's events) and every agent reply `lg-{run}-r{n}`
//! (the reply to customer message `n`). They travel in plain text, so they show in an offer's
//! `recent_messages[].preview`, a `message` frame's `content.text` and, once replies reach LINE,
//! in what the fake LINE platform records.

use std::fmt;

/// Tells one run's markers from another's (a database may hold several runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub u32);

impl RunId {
    /// A run id unlikely to repeat: the clock's nanoseconds mixed with the process id.
    pub fn fresh() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mixed = (nanos as u64 ^ (u64::from(std::process::id()) << 32))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self((mixed >> 32) as u32)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// What a marker found in a text refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// Customer message `n` of the run.
    Customer(u64),
    /// The agent's reply to customer message `n`.
    Reply(u64),
}

impl Marker {
    pub fn text(self, run: RunId) -> String {
        match self {
            Self::Customer(n) => format!("lg-{run}-{n}"),
            Self::Reply(n) => format!("lg-{run}-r{n}"),
        }
    }
}

/// Every marker of `run` in `text`, in order.
pub fn find_all(text: &str, run: RunId) -> Vec<Marker> {
    let prefix = format!("lg-{run}-");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        rest = &rest[at + prefix.len()..];
        let (reply, digits_from) = match rest.strip_prefix('r') {
            Some(tail) => (true, tail),
            None => (false, rest),
        };
        let digits = digits_from.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(n) = digits_from[..digits].parse() {
            found.push(if reply {
                Marker::Reply(n)
            } else {
                Marker::Customer(n)
            });
        }
    }
    found
}

/// Parses one marker as [`find_marker`] returns it, if it belongs to `run`.
pub fn parse(marker: &str, run: RunId) -> Option<Marker> {
    match find_all(marker, run).as_slice() {
        [one] if marker.len() == one.text(run).len() => Some(*one),
        _ => None,
    }
}

/// The first marker of any run in `text`, e.g. `lg-0badcafe-r17`: for whoever observes
/// deliveries (the fake LINE platform) and hands them back as [`super::LineDelivery`].
pub fn find_marker(text: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(at) = text[from..].find("lg-") {
        let start = from + at;
        let candidate = &text[start..];
        let bytes = candidate.as_bytes();
        let run_ok =
            bytes.len() > 12 && bytes[3..11].iter().all(u8::is_ascii_hexdigit) && bytes[11] == b'-';
        if run_ok {
            let mut end = 12;
            if bytes.get(end) == Some(&b'r') {
                end += 1;
            }
            let digits = bytes[end..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 {
                return Some(&candidate[..end + digits]);
            }
        }
        from = start + 3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_text_and_tell_customers_from_replies() {
        let run = RunId(0x0bad_cafe);
        assert_eq!(Marker::Customer(17).text(run), "lg-0badcafe-17");
        assert_eq!(Marker::Reply(17).text(run), "lg-0badcafe-r17");
        let text = "hello lg-0badcafe-17, see lg-0badcafe-r3 and lg-00000001-9 lg-0badcafe-";
        assert_eq!(
            find_all(text, run),
            [Marker::Customer(17), Marker::Reply(3)]
        );
        assert_eq!(parse("lg-0badcafe-r3", run), Some(Marker::Reply(3)));
        assert_eq!(parse("lg-0badcafe-r3x", run), None);
        assert_eq!(parse("lg-00000001-3", run), None);
    }

    #[test]
    fn find_marker_returns_the_first_marker_of_any_run() {
        assert_eq!(
            find_marker("thanks, noted (lg-0badcafe-r17)"),
            Some("lg-0badcafe-r17")
        );
        assert_eq!(
            find_marker("lg-nothex00-1 lg-00000001-42."),
            Some("lg-00000001-42")
        );
        assert_eq!(find_marker("lg-0badcafe-"), None);
        assert_eq!(find_marker("no marker"), None);
    }

    #[test]
    fn fresh_run_ids_differ() {
        let a = RunId::fresh();
        let b = (0..100).map(|_| RunId::fresh()).find(|b| *b != a);
        assert!(b.is_some());
    }
}
