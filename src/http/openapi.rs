//! The OpenAPI document made exact where per-handler annotations cannot be: every error the
//! server can answer is `application/problem+json`, and every operation lists the one shared
//! set of error responses (the extractors and layers that produce them stand in front of
//! every route, so no handler's annotation would be complete on its own).

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The errors any operation may answer, and why.
const SHARED: &[(&str, &str)] = &[
    ("400", "Malformed request: an id, a query parameter or the JSON itself"),
    ("401", "No valid session, API token or stream token"),
    ("403", "Authenticated, but this role may not do this"),
    ("404", "No such resource, or one the caller may not see"),
    ("405", "This path does not take this method"),
    ("409", "The request conflicts with the current state"),
    ("413", "The body exceeds the size limit"),
    ("415", "The body is not JSON"),
    ("422", "Well-formed, but a field is invalid (each named in `errors`)"),
    ("429", "Too many requests or attempts: retry after `Retry-After` seconds"),
    ("500", "An error on the server's side"),
    ("503", "Overloaded or the store is unreachable: retry after `Retry-After` seconds"),
];

fn problem(description: &str, retry_after: bool) -> Response {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let mut response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content);
    if retry_after {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build();
        response = response.header("Retry-After", HeaderBuilder::new().schema(Some(seconds)).description(Some("Seconds to wait")).build());
    }
    response.build()
}

/// Whether a response's JSON body is the problem document.
fn is_problem(response: &Response) -> bool {
    response.content.get("application/json").is_some_and(|c| match c {
        RefOr::T(content) => matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")),
        RefOr::Ref(_) => false,
    })
}

/// Request bodies that need at least one of several optional fields, which a derived
/// schema cannot say: (schema, the fields of which one must be present).
const ONE_OF_REQUIRED: &[(&str, &[&str])] = &[("AddMember", &["email", "user_id"])];

fn require_one_of(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else { return };
    for (name, fields) in ONE_OF_REQUIRED {
        let Some(RefOr::T(schema)) = components.schemas.get(*name).cloned() else { continue };
        let mut any = AnyOfBuilder::new();
        for field in *fields {
            // Present and not null.
            let present = ObjectBuilder::new().schema_type(Type::String).build();
            let not_null = ObjectBuilder::new().required(*field).property(*field, present);
            any = any.item(not_null);
        }
        let all = AllOfBuilder::new().item(schema).item(Schema::AnyOf(any.build())).build();
        components.schemas.insert(name.to_string(), RefOr::T(Schema::AllOf(all)));
    }
}

/// Request bodies where one field's value makes another required, which a derived schema
/// cannot say either: (schema, field, the values that do not, the field then required).
const REQUIRED_UNLESS: &[(&str, &str, &[&str], &str)] = &[("StreamTokenRequest", "purpose", &["events"], "ticket_id")];

fn require_unless(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else { return };
    for (name, field, values, required) in REQUIRED_UNLESS {
        let Some(RefOr::T(schema)) = components.schemas.get(*name).cloned() else { continue };
        // Absent, or one of `values` (a property's schema only applies when it is present)…
        let exempt =
            ObjectBuilder::new().property(*field, ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())));
        // …or the other field present and not null.
        let given = ObjectBuilder::new().required(*required).property(*required, ObjectBuilder::new().schema_type(Type::String));
        let any = AnyOfBuilder::new().item(exempt).item(given).build();
        let all = AllOfBuilder::new().item(schema).item(Schema::AnyOf(any)).build();
        components.schemas.insert(name.to_string(), RefOr::T(Schema::AllOf(all)));
    }
}

/// Applies the rules above to `doc`.
pub fn complete(doc: &mut OpenApi) {
    require_one_of(doc);
    require_unless(doc);
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response
                    && is_problem(response)
                    && let Some(content) = response.content.shift_remove("application/json")
                {
                    response.content.insert(PROBLEM_JSON.to_string(), content);
                }
            }
            for (status, why) in SHARED {
                let retry = matches!(*status, "429" | "503");
                // A route's own description of a status (say, why it answers 409) stays.
                operation.responses.responses.entry(status.to_string()).or_insert_with(|| RefOr::T(problem(why, retry)));
            }
        }
    }
}
