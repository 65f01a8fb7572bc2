//! HMAC-SHA256 signatures in the `sha256=<hex>` form used by GitHub's `X-Hub-Signature-256`
//! and by mycopod's own `X-Mycopod-Signature` on outgoing webhooks.
//!
//! Verification compares in constant time; nothing here logs a secret or a signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header value for `body` signed with `secret`: `sha256=` and 64 hex digits.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here; an empty
    // signature would only ever fail verification.
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// Whether `header` (`sha256=<hex>`) is the signature of `body` under `secret`. A missing
/// prefix, bad hex or a wrong length is simply not valid. The comparison is constant-time.
pub fn verify_sha256(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digits) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digits) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
    const GITHUB_EXAMPLE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn sign_should_match_githubs_documented_example() {
        assert_eq!(
            sign_sha256(b"It's a Secret to Everybody", b"Hello, World!"),
            GITHUB_EXAMPLE
        );
    }

    #[test]
    fn verify_should_accept_only_the_exact_signature() {
        let secret = b"It's a Secret to Everybody";
        assert!(verify_sha256(secret, b"Hello, World!", GITHUB_EXAMPLE));
        assert!(!verify_sha256(secret, b"Hello, World?", GITHUB_EXAMPLE));
        assert!(!verify_sha256(b"other", b"Hello, World!", GITHUB_EXAMPLE));
        assert!(!verify_sha256(
            secret,
            b"Hello, World!",
            &GITHUB_EXAMPLE[7..]
        ));
        assert!(!verify_sha256(secret, b"Hello, World!", "sha256=zz"));
        assert!(!verify_sha256(secret, b"Hello, World!", "sha256="));
        assert!(!verify_sha256(secret, b"Hello, World!", ""));
        let truncated = &GITHUB_EXAMPLE[..GITHUB_EXAMPLE.len() - 2];
        assert!(!verify_sha256(secret, b"Hello, World!", truncated));
    }
}
