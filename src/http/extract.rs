//! Extractors that reject bad input the way the rest of the API does (problem+json).
//!
//! axum's own `Json`, `Path` and `Query` answer rejections in plain text with statuses
//! of their own choosing; these wrappers keep the body format uniform and the statuses
//! deliberate: malformed JSON or ids → 400, well-formed JSON of the wrong shape → 422,
//! wrong content type → 415, a body over the limit → 413.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{AppError, FieldError};

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::JsonDataError(err) => {
            // serde's message names the path ("title: invalid type: integer `5`, expected a string").
            let text = err.body_text();
            let detail = text.split_once(": ").map_or(text.as_str(), |(_, rest)| rest).to_string();
            let (field, message) = match detail.split_once(": ") {
                Some((path, msg)) if !path.contains(' ') => (path.to_string(), msg.to_string()),
                _ => ("body".to_string(), detail.clone()),
            };
            AppError::Validation(vec![FieldError::new(field, message)])
        }
        JsonRejection::JsonSyntaxError(_) => AppError::BadRequest("the body is not valid JSON".into()),
        JsonRejection::MissingJsonContentType(_) => AppError::UnsupportedMediaType("expected Content-Type: application/json".into()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        other => AppError::BadRequest(other.body_text()),
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
