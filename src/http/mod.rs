//! HTTP plumbing shared by every feature: extractors whose rejections are problem+json,
//! and the request-scoped helpers (client address, request id).

pub mod extract;
