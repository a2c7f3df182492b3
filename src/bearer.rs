//! Bearer tokens, as the admin API and the fleet listener check them: one way to read the
//! header and one constant-time comparison. It knows nothing of what a token allows.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// Whether `headers` carry `Authorization: Bearer <token>` (the scheme in any case, RFC 9110
/// 11.1), compared in constant time: the admin API's and the fleet listener's check.
pub fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, presented)| presented.trim_start());
    bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
}
