//! Bearer tokens, as the control API (and ebb's web view) accept them.

/// The token of an `Authorization` header value in the bearer scheme. Schemes are
/// case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer` and `BEARER` all count.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares a given token with the expected one in time that does not depend on where
/// they differ.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_other_schemes_are_not_bearer() {
        for h in ["Bearer abc", "bearer abc", "BEARER  abc", "  Bearer abc "] {
            assert_eq!(bearer_token(h), Some("abc"), "{h:?}");
        }
        for h in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", ""] {
            assert_eq!(bearer_token(h), None, "{h:?}");
        }
    }
}
