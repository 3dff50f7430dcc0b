//! HTTP plumbing shared by every feature: extractors whose rejections are problem+json,
//! parsing of the query parameters every list shares, and (`outbound`) the rule for
//! connecting to servers that users name.

pub mod client;
pub mod conn;
pub mod extract;
pub mod number;
pub mod opaque;
pub mod openapi;
pub mod outbound;

use crate::error::FieldError;

/// Whitespace as the OpenAPI document's patterns mean it (ECMA-262 `\s`, what JSON Schema
/// regexes use), so that what the server trims or refuses as blank is exactly what the
/// schema calls space: tab to carriage return, space, no-break space, U+1680, U+2000 to
/// U+200A, line and paragraph separators, U+202F, U+205F, U+3000 and the BOM.
pub fn is_space(c: char) -> bool {
    matches!(c, '\u{9}'..='\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}')
}

/// For a field that may be absent (`None`: leave it), `null` (`Some(None)`: clear it) or a
/// value: `#[serde(default, deserialize_with = "crate::http::present")]`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Parses a `limit` query parameter: 1 to `max`, `default` when absent.
pub fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, FieldError> {
    match raw {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| FieldError::new("limit", format!("must be a whole number from 1 to {max}"))),
    }
}

#[cfg(test)]
mod space_tests {
    #[test]
    fn space_is_ecma_262_space() {
        for c in ['\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{a0}', '\u{2003}', '\u{3000}', '\u{feff}'] {
            assert!(super::is_space(c), "{c:?}");
        }
        // Unicode calls these whitespace; ECMA-262's \s (and so the schema) does not.
        for c in ['\u{85}', '\u{1c}', 'x', '@'] {
            assert!(!super::is_space(c), "{c:?}");
        }
    }
}
