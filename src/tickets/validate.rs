//! Validation of ticket input: titles, tags, and references to members.

use crate::error::{AppError, AppResult, FieldError};
use crate::store::UserId;
use crate::tenants::TenantConn;

pub const TITLE_MAX: usize = 300;
pub const BODY_MAX: usize = 65_536;
pub const TAGS_MAX: usize = 20;

pub fn title(value: &str) -> Result<String, FieldError> {
    crate::auth::validate_text("title", value, TITLE_MAX)
}

pub fn body(value: &str) -> Result<String, FieldError> {
    if value.chars().all(crate::http::is_space) {
        return Err(FieldError::new("body", "must not be empty"));
    }
    if value.chars().count() > BODY_MAX {
        return Err(FieldError::new("body", format!("must be at most {BODY_MAX} characters")));
    }
    Ok(value.to_string())
}

/// The uploaded files a reply carries: at most [`MAX_ON_REPLY`] (422 otherwise, as the
/// schema says), each once, in the order given. Only a public reply carries uploaded files:
/// an internal note's are uploaded with its `comment_id` (staff-only from the start), so
/// files on an internal note are a conflict (409) with what they are (public uploads).
///
/// [`MAX_ON_REPLY`]: crate::store::attachments::MAX_ON_REPLY
pub fn reply_files(ids: Vec<crate::store::blobs::AttachmentId>) -> Result<Vec<crate::store::blobs::AttachmentId>, FieldError> {
    use crate::store::attachments::MAX_ON_REPLY;
    if ids.len() > MAX_ON_REPLY {
        return Err(FieldError::new("attachments", format!("at most {MAX_ON_REPLY} files")));
    }
    let mut once = Vec::with_capacity(ids.len());
    for id in ids {
        if !once.contains(&id) {
            once.push(id);
        }
    }
    Ok(once)
}

/// Tags are normalised ([`normalise_tag`]) and de-duplicated in order, at most 20 per ticket.
///
/// [`normalise_tag`]: crate::tenants::filter::normalise_tag
pub fn tags(values: &[String]) -> Result<Vec<String>, FieldError> {
    if values.len() > TAGS_MAX {
        return Err(FieldError::new("tags", format!("at most {TAGS_MAX} tags")));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, raw) in values.iter().enumerate() {
        let Some(tag) = crate::tenants::filter::normalise_tag(raw) else {
            return Err(FieldError::new(format!("tags[{i}]"), "1-40 characters of a-z, 0-9, '-', '_', ':', '.'"));
        };
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// `user` must be a member of the workspace; with `staff`, an owner, admin or agent.
pub async fn member(conn: &TenantConn, field: &str, user: UserId, staff: bool) -> AppResult<()> {
    match conn.role_of(user).await? {
        Some(role) if !staff || role.is_staff() => Ok(()),
        Some(_) => Err(AppError::Conflict(format!("{field}: must be an agent, admin or owner of this workspace"))),
        // The id is well-formed; the workspace's current members do not include it.
        None => Err(AppError::Conflict(format!("{field}: not a member of this workspace"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_normalise_dedupe_and_reject_junk() {
        assert_eq!(tags(&[" Billing ".into(), "billing".into(), "vip:gold".into()]).unwrap(), vec!["billing", "vip:gold"]);
        assert_eq!(tags(&["ok".into(), "no spaces".into()]).unwrap_err().field, "tags[1]");
        assert!(tags(&["".into()]).is_err());
        assert!(tags(&vec!["a".to_string(); 21]).is_err());
        assert!(tags(&["x".repeat(41)]).is_err());
    }
}
