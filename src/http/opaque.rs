//! Values a client produces and the server keeps without reading: keys, ciphertexts,
//! wrapped keys. Only their shape is checked, once, here.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::error::{AppError, AppResult};

/// Longest opaque field accepted, in characters of base64 (a 16 KiB value, well above any
/// KEM ciphertext or key in use).
pub const MAX_OPAQUE_CHARS: usize = 22_000;

/// Checks a client's opaque value: non-empty base64 (standard or URL-safe, padded or not),
/// at most [`MAX_OPAQUE_CHARS`]. Only its shape is checked; what it holds is never read.
pub fn opaque(field: &str, value: &str) -> AppResult<()> {
    if value.is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_OPAQUE_CHARS {
        return Err(AppError::invalid(field, format!("at most {MAX_OPAQUE_CHARS} characters of base64")));
    }
    let bytes = value.as_bytes();
    let decodes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().any(|engine| engine.decode(bytes).is_ok());
    if !decodes {
        return Err(AppError::invalid(field, "must be base64"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_values_are_bounded_base64_of_either_alphabet() {
        assert!(opaque("f", "AAEC").is_ok());
        assert!(opaque("f", "-_8").is_ok());
        assert!(opaque("f", "+/8=").is_ok());
        assert!(opaque("f", "").is_err());
        assert!(opaque("f", "not base64!").is_err());
        assert!(opaque("f", &"A".repeat(MAX_OPAQUE_CHARS + 4)).is_err());
    }
}
