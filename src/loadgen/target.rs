//! Where the load goes: a linedesk on this machine. A load generator pointed at someone else's
//! server is a denial of service, so anything but a loopback address is refused before a single
//! request leaves.

use std::net::IpAddr;

use super::LoadgenError;

/// The base URL of a linedesk on a loopback address, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    base: String,
}

impl Target {
    /// Accepts `http://` URLs whose host is `localhost`, an address in 127.0.0.0/8 or `::1`.
    pub fn parse(url: &str) -> Result<Self, LoadgenError> {
        let bad = |why: &str| LoadgenError::BadTarget(format!("`{url}`: {why}"));
        let uri: awc::http::Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("use http://HOST:PORT (loadgen speaks plain HTTP)"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(LoadgenError::NotLoopback {
                host: host.to_owned(),
            });
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("give the server's base URL, without a path"));
        }
        Ok(Self {
            base: format!("http://{authority}"),
        })
    }

    /// `path` (starting with `/`) on the target.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The websocket URL of `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws{}{path}", &self.base["http".len()..])
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3:1/",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            let target = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!target.url("/metrics").contains("//metrics"), "{url}");
        }
        let target = Target::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(target.url("/healthz"), "http://127.0.0.1:9/healthz");
        assert_eq!(target.ws_url("/agent/ws"), "ws://127.0.0.1:9/agent/ws");
    }

    #[test]
    fn other_hosts_and_schemes_are_refused() {
        for url in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "http://0.0.0.0:8080",
            "http://[::2]:80",
        ] {
            assert!(
                matches!(Target::parse(url), Err(LoadgenError::NotLoopback { .. })),
                "{url}"
            );
        }
        for url in [
            "https://127.0.0.1:8443",
            "127.0.0.1:8080",
            "http://127.0.0.1/x",
        ] {
            assert!(
                matches!(Target::parse(url), Err(LoadgenError::BadTarget(_))),
                "{url}"
            );
        }
    }
}
