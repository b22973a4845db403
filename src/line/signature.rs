//! The `x-line-signature` check: base64 of HMAC-SHA256 over the raw body, keyed with the
//! channel secret. Checked on the exact bytes received, before any parsing.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The reasons are told apart for operators' logs only; the caller
/// answers all of them the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the x-line-signature header is missing")]
    Missing,
    #[error("the x-line-signature header is not base64")]
    NotBase64,
    #[error("the signature does not match the body (wrong channel secret?)")]
    Mismatch,
}

/// Verifies `header` (the `x-line-signature` value) against `body`, in constant time.
pub fn verify(
    channel_secret: &[u8],
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let expected = BASE64
        .decode(header.trim_ascii())
        .map_err(|_| SignatureError::NotBase64)?;
    mac(channel_secret, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The signature LINE would send for `body`; used by the load generator and the tests' fake LINE.
pub fn sign(channel_secret: &[u8], body: &[u8]) -> String {
    BASE64.encode(mac(channel_secret, body).finalize().into_bytes())
}

fn mac(channel_secret: &[u8], body: &[u8]) -> HmacSha256 {
    // unwrap: HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(channel_secret).unwrap();
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known vector, computed independently with
    // `printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64`.
    const SECRET: &str = "linedesk-demo-channel-secret-dev";
    const BODY: &str = r#"{"destination":"U0123456789abcdef0123456789abcdef","events":[]}"#;
    const SIGNATURE: &str = "+HV6s1SPUDTUePcTs7Dso/V0gHFNPagim/rUN/ns8U8=";

    #[test]
    fn signing_matches_the_known_vector() {
        assert_eq!(sign(SECRET.as_bytes(), BODY.as_bytes()), SIGNATURE.trim());
    }

    #[test]
    fn the_known_vector_verifies() {
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                BODY.as_bytes(),
                Some(SIGNATURE.trim().as_bytes())
            ),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_secret_or_header_is_refused() {
        let sig = SIGNATURE.trim().as_bytes();
        let mut body = BODY.as_bytes().to_vec();
        body.push(b' ');
        assert_eq!(
            verify(SECRET.as_bytes(), &body, Some(sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", BODY.as_bytes(), Some(sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET.as_bytes(), BODY.as_bytes(), None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(SECRET.as_bytes(), BODY.as_bytes(), Some(b"not base64!")),
            Err(SignatureError::NotBase64)
        );
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                BODY.as_bytes(),
                Some(&sig[..sig.len() - 4])
            ),
            Err(SignatureError::Mismatch)
        );
    }
}
