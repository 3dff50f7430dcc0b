//! The ticket list's filters as query parameters, parsed once for every route that offers
//! them (the ticket list, search).

use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::FieldError;
use crate::store::{AssigneeFilter, Priority, Status, TicketFilter, UserId};

/// The longest tag, in characters.
pub const TAG_MAX: usize = 40;

/// A tag as stored: trimmed and lower-cased, 1–40 characters of `a-z 0-9 - _ : .`; `None`
/// when `raw` is not one.
pub fn normalise_tag(raw: &str) -> Option<String> {
    let tag = raw.trim_matches(crate::http::is_space).to_lowercase();
    let ok = !tag.is_empty()
        && tag.chars().count() <= TAG_MAX
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
    ok.then_some(tag)
}

/// A tag as the schema shows it: what [`normalise_tag`] accepts (surrounding spaces are
/// trimmed and letters lower-cased).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = r"^\s*[A-Za-z0-9_:.\-]{1,40}\s*$")]
pub struct Tag(#[allow(dead_code)] String);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// `open`, `pending`, `resolved` or `closed`.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    #[param(value_type = Option<Priority>)]
    priority: Option<String>,
    /// A user id, or `none` for unassigned tickets.
    #[param(pattern = r"^(none|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")]
    assignee: Option<String>,
    /// A user id.
    #[param(value_type = Option<String>, format = Uuid)]
    requester: Option<String>,
    #[param(value_type = Option<Tag>)]
    tag: Option<String>,
}

impl FilterParams {
    /// The filter, with what is wrong with each bad parameter added to `errors`.
    pub fn parse(&self, errors: &mut Vec<FieldError>) -> TicketFilter {
        let status = self.status.as_deref().and_then(|raw| {
            let parsed = Status::parse(raw);
            if parsed.is_none() {
                errors.push(FieldError::new("status", "must be one of open, pending, resolved, closed"));
            }
            parsed
        });
        let priority = self.priority.as_deref().and_then(|raw| {
            let parsed = Priority::parse(raw);
            if parsed.is_none() {
                errors.push(FieldError::new("priority", "must be one of low, normal, high, urgent"));
            }
            parsed
        });
        let assignee = match self.assignee.as_deref() {
            None => None,
            Some("none") => Some(AssigneeFilter::Unassigned),
            Some(id) => {
                id.parse().map(AssigneeFilter::User).map_err(|_| errors.push(FieldError::new("assignee", "must be a user id or none"))).ok()
            }
        };
        let requester = match self.requester.as_deref() {
            None => None,
            Some(id) => id.parse::<UserId>().map_err(|_| errors.push(FieldError::new("requester", "must be a user id"))).ok(),
        };
        let tag = self.tag.as_deref().and_then(|raw| {
            let tag = normalise_tag(raw);
            if tag.is_none() {
                errors.push(FieldError::new("tag", "not a valid tag"));
            }
            tag
        });
        TicketFilter { status, priority, assignee, requester, tag }
    }
}
