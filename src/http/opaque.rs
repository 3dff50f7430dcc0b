//! Values a client produces and the server keeps without reading: keys, ciphertexts,
//! wrapped keys. Only their shape is checked, once, here.

use crate::error::{AppError, AppResult};

/// Longest opaque field accepted in a JSON body, in characters of base64 (a 16 KiB value,
/// well above any KEM ciphertext or key in use).
pub const MAX_OPAQUE_CHARS: usize = 22_000;

/// What an opaque value looks like, as the OpenAPI document states it (every `pattern` on
/// such a field is this text): base64 characters of either alphabet, padding at the end.
pub const BASE64_PATTERN: &str = r"^[A-Za-z0-9+/_-]+={0,2}$";

/// Checks a client's opaque value: non-empty, at most `max` characters, written as
/// [`BASE64_PATTERN`] says. Only its shape is checked: the server never decodes it.
pub fn opaque(field: &str, value: &str, max: usize) -> AppResult<()> {
    if value.is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(AppError::invalid(field, format!("at most {max} characters of base64")));
    }
    let body = value.trim_end_matches('=');
    let base64 = value.len() - body.len() <= 2
        && !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-'));
    if !base64 {
        return Err(AppError::invalid(field, "must be base64"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_values_are_bounded_base64_text_of_either_alphabet() {
        let max = MAX_OPAQUE_CHARS;
        assert!(opaque("f", "AAEC", max).is_ok());
        assert!(opaque("f", "-_8", max).is_ok());
        assert!(opaque("f", "+/8=", max).is_ok());
        assert!(opaque("f", "0", max).is_ok(), "what the pattern allows is allowed");
        assert!(opaque("f", "", max).is_err());
        assert!(opaque("f", "=", max).is_err());
        assert!(opaque("f", "AA===", max).is_err());
        assert!(opaque("f", "not base64!", max).is_err());
        assert!(opaque("f", "AAAA", 3).is_err());
        assert!(opaque("f", &"A".repeat(MAX_OPAQUE_CHARS + 4), max).is_err());
    }
}
