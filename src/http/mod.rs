//! HTTP plumbing shared by every feature: extractors whose rejections are problem+json,
//! and parsing of the query parameters every list shares.

pub mod client;
pub mod conn;
pub mod extract;
pub mod openapi;

use crate::error::FieldError;

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
