//! Extractors that reject bad input the way the rest of the API does (problem+json).
//!
//! axum's own `Json`, `Path` and `Query` answer rejections in plain text with statuses
//! of their own choosing; these keep the body format uniform and the statuses deliberate:
//! malformed JSON or ids → 400, well-formed JSON of the wrong shape → 422 naming the
//! field, wrong content type → 415, a body over the limit → 413.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{AppError, FieldError};

/// A JSON request body.
pub struct ApiJson<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_json(content_type) {
            return Err(AppError::UnsupportedMediaType("expected Content-Type: application/json".into()));
        }
        // `Bytes` honours the router's DefaultBodyLimit.
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge
            } else {
                AppError::BadRequest("the request body could not be read".into())
            }
        })?;
        decode(&bytes).map(Self)
    }
}

/// Malformed JSON is 400; well-formed JSON that does not fit `T` is 422 naming the field.
/// (serde_json calls some type mismatches "syntax" errors, e.g. a number where an enum
/// name belongs, so the distinction is made here by re-reading the bytes as plain JSON.)
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let malformed = || AppError::BadRequest("the body is not valid JSON".into());
    // Derived structs would also accept a JSON array; every body of this API is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(AppError::invalid("body", "must be a JSON object")),
            Err(_) => Err(malformed()),
        };
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        // Trailing garbage after a complete value is malformed too.
        Ok(value) => de.end().map(|()| value).map_err(|_| malformed()),
        Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() => Err(malformed()),
        Err(err) => {
            let path = err.path().to_string();
            let field = if path == "." { "body".to_string() } else { path };
            Err(AppError::Validation(vec![FieldError::new(field, err.into_inner().to_string())]))
        }
    }
}

/// Path parameters, typically ids: garbage is a 400 before any lookup.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(err)) => {
                Err(AppError::BadRequest(format!("malformed path parameter: {}", err.body_text())))
            }
            Err(other) => Err(AppError::BadRequest(other.body_text())),
        }
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                Err(AppError::BadRequest(format!("malformed query: {}", err.body_text())))
            }
            Err(other) => Err(AppError::BadRequest(other.body_text())),
        }
    }
}

/// An optional whole number that JSON may write as `7` or `7.0` (JSON Schema's `integer`
/// admits both; serde's integers only the first).
pub fn optional_whole_u32<'de, D>(de: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let Some(value) = Option::<serde_json::Number>::deserialize(de)? else { return Ok(None) };
    if let Some(n) = value.as_u64() {
        return u32::try_from(n).map(Some).map_err(|_| D::Error::custom("must be at most 4294967295"));
    }
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&f) => Ok(Some(f as u32)),
        _ => Err(D::Error::custom("must be a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        role: crate::store::Role,
        tags: Vec<String>,
    }

    fn field(result: Result<Body, AppError>) -> String {
        match result {
            Err(AppError::Validation(errors)) => errors[0].field.clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn type_errors_are_422_with_the_field_and_syntax_errors_400() {
        assert_eq!(field(decode(br#"{"role": 3, "tags": []}"#)), "role");
        assert_eq!(field(decode(br#"{"role": "agent", "tags": ["a", 2]}"#)), "tags[1]");
        assert_eq!(field(decode(br#"[1]"#)), "body");
        assert!(matches!(decode::<Body>(br#"{"role": "#), Err(AppError::BadRequest(_))));
        assert!(matches!(decode::<Body>(br#"{"role": "agent", "tags": []} trailing"#), Err(AppError::BadRequest(_))));
        assert!(decode::<Body>(br#"{"role": "agent", "tags": []}"#).is_ok());
    }
}

/// `/api/workspaces/{ws}/tickets/{id}…`, for every feature with routes under a ticket
/// (tickets, notes, attachments): both ids are parsed (400 on garbage) before any lookup.
#[derive(Debug, serde::Deserialize)]
pub struct TicketPath {
    #[allow(dead_code)]
    pub ws: crate::store::WorkspaceId,
    pub id: crate::store::TicketId,
}
