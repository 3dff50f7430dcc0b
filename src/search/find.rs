//! Running a parsed query on one workspace's index: the Tantivy query (the caller's
//! permissions and the ticket list's filters are clauses of it, so paging counts only what
//! the caller may see), the page of tickets, and each hit's highlights.

use std::collections::BTreeMap;

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::TokenStream;
use tantivy::{TantivyDocument, Term};
use utoipa::ToSchema;

use super::index::{IndexError, WorkspaceIndex};
use super::query::{Parsed, Word};
use super::schema::{Fields, TextField, TicketState, UNASSIGNED, analyzer};
use crate::store::blobs::AttachmentId;
use crate::store::{AssigneeFilter, Audience, CommentId, Ticket, TicketFilter};

/// The most hits skipped by paging (deeper pages cost more than anyone reads).
pub const MAX_OFFSET: usize = 1_000;
/// Highlights per hit.
pub const HIGHLIGHTS: usize = 3;
/// Characters of a highlight's fragment.
pub const FRAGMENT_CHARS: usize = 160;

pub struct Request {
    pub parsed: Parsed,
    pub audience: Audience,
    pub filter: TicketFilter,
    pub offset: usize,
    pub limit: usize,
}

/// Where a hit matched, with the matching words marked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Highlight {
    pub field: TextField,
    /// The reply or internal note the fragment is from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<CommentId>,
    /// The file whose name or type the fragment is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub attachment_id: Option<AttachmentId>,
    /// The fragment as plain text.
    pub text: String,
    /// The fragment as HTML: escaped, each match in `<mark>…</mark>`.
    pub html: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Hit {
    pub ticket: Ticket,
    pub score: f32,
    pub highlights: Vec<Highlight>,
}

/// The text fields `audience` may match.
fn fields_for(audience: Audience) -> Vec<TextField> {
    TextField::ALL.into_iter().filter(|f| audience.is_staff() || f.public()).collect()
}

fn exact(field: tantivy::schema::Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
}

/// One word in one field: the exact word scores by BM25 (doubled), a typo or a prefix a
/// flat amount below it.
fn word_query(fields: &Fields, field: TextField, word: &Word) -> Box<dyn Query> {
    let term = Term::from_field_text(fields.text(field), &word.text);
    let boost = field.boost();
    let exact: Box<dyn Query> =
        Box::new(BoostQuery::new(Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)), 2.0 * boost));
    let loose: Box<dyn Query> = match (word.as_prefix(), word.typos) {
        (false, 0) => return exact,
        (true, typos) => Box::new(FuzzyTermQuery::new_prefix(term, typos, true)),
        (false, typos) => Box::new(FuzzyTermQuery::new(term, typos, true)),
    };
    Box::new(BooleanQuery::new(vec![(Occur::Should, exact), (Occur::Should, Box::new(BoostQuery::new(loose, boost)))]))
}

/// The whole query: every word and phrase somewhere the caller may look, on a ticket the
/// caller may see, that passes the filters.
pub fn build(fields: &Fields, request: &Request) -> Box<dyn Query> {
    let allowed = fields_for(request.audience);
    let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for word in &request.parsed.words {
        let any = allowed.iter().map(|f| (Occur::Should, word_query(fields, *f, word))).collect();
        must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    for phrase in &request.parsed.phrases {
        let any = allowed
            .iter()
            .map(|f| {
                let terms = phrase.iter().map(|w| Term::from_field_text(fields.text(*f), w)).collect();
                let query: Box<dyn Query> = Box::new(BoostQuery::new(Box::new(PhraseQuery::new(terms)), 2.0 * f.boost()));
                (Occur::Should, query)
            })
            .collect();
        must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    if let Audience::Requester(user) = request.audience {
        must.push((Occur::Must, exact(fields.requester, &user.to_string())));
    }
    let filter = &request.filter;
    if let Some(status) = filter.status {
        must.push((Occur::Must, exact(fields.status, status.as_str())));
    }
    if let Some(priority) = filter.priority {
        must.push((Occur::Must, exact(fields.priority, priority.as_str())));
    }
    match &filter.assignee {
        Some(AssigneeFilter::User(user)) => must.push((Occur::Must, exact(fields.assignee, &user.to_string()))),
        Some(AssigneeFilter::Unassigned) => must.push((Occur::Must, exact(fields.assignee, UNASSIGNED))),
        None => {}
    }
    if let Some(requester) = filter.requester {
        must.push((Occur::Must, exact(fields.requester, &requester.to_string())));
    }
    if let Some(tag) = &filter.tag {
        must.push((Occur::Must, exact(fields.tag, tag)));
    }
    Box::new(BooleanQuery::new(must))
}

/// The page of hits after `offset`, and whether more follow.
pub fn find(index: &WorkspaceIndex, request: &Request) -> Result<(Vec<Hit>, bool), IndexError> {
    let fields = index.fields();
    let query = build(fields, request);
    let searcher = index.searcher();
    let tantivy = |e: tantivy::TantivyError| IndexError::Tantivy { dir: index.dir.display().to_string(), message: e.to_string() };
    let top = searcher
        .search(query.as_ref(), &TopDocs::with_limit(request.limit + 1).and_offset(request.offset.min(MAX_OFFSET)).order_by_score())
        .map_err(tantivy)?;
    let more = top.len() > request.limit;
    let mut hits = Vec::with_capacity(top.len().min(request.limit));
    for (score, address) in top.into_iter().take(request.limit) {
        let doc: TantivyDocument = searcher.doc(address).map_err(tantivy)?;
        let Some(state) = fields.state_of(&doc) else { continue };
        let highlights = highlights(fields, &state, request);
        hits.push(Hit { ticket: state.ticket, score, highlights });
    }
    Ok((hits, more))
}

/// One text of a ticket, where it is from.
struct Source<'a> {
    field: TextField,
    comment: Option<CommentId>,
    attachment: Option<AttachmentId>,
    text: std::borrow::Cow<'a, str>,
}

fn sources(state: &TicketState) -> Vec<Source<'_>> {
    let mut out = vec![Source { field: TextField::Title, comment: None, attachment: None, text: state.ticket.title.as_str().into() }];
    for comment in &state.comments {
        let field = if comment.internal { TextField::Internal } else { TextField::Reply };
        out.push(Source { field, comment: Some(comment.id), attachment: None, text: comment.body.as_str().into() });
    }
    if !state.note.is_empty() {
        out.push(Source { field: TextField::Note, comment: None, attachment: None, text: state.note.as_str().into() });
    }
    for file in &state.files {
        let field = if file.internal { TextField::InternalAttachment } else { TextField::Attachment };
        out.push(Source { field, comment: file.comment, attachment: Some(file.id), text: file.text().into() });
    }
    out
}

/// The words of `text` that the query matches (typos and prefixes as the index matched them).
fn matching_words(text: &str, parsed: &Parsed) -> BTreeMap<String, f32> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut found = BTreeMap::new();
    while stream.advance() {
        let token = &stream.token().text;
        let hit = parsed.words.iter().any(|w| w.matches(token)) || parsed.phrases.iter().flatten().any(|w| w == token);
        if hit {
            found.insert(token.clone(), 1.0);
        }
    }
    found
}

/// Up to [`HIGHLIGHTS`] fragments where the query matched, from fields the caller may see:
/// the best fragment of each field, fields in their order of importance.
fn highlights(fields: &Fields, state: &TicketState, request: &Request) -> Vec<Highlight> {
    let allowed = fields_for(request.audience);
    let mut best: Vec<(TextField, usize, Highlight)> = Vec::new();
    for source in sources(state) {
        if !allowed.contains(&source.field) {
            continue;
        }
        let words = matching_words(&source.text, &request.parsed);
        if words.is_empty() {
            continue;
        }
        let mut generator = SnippetGenerator::new(words, analyzer(), fields.text(source.field), FRAGMENT_CHARS);
        generator.set_max_num_chars(FRAGMENT_CHARS);
        let mut snippet = generator.snippet(&source.text);
        if snippet.is_empty() {
            continue;
        }
        snippet.set_snippet_prefix_postfix("<mark>", "</mark>");
        let marks = snippet.highlighted().len();
        let highlight = Highlight {
            field: source.field,
            comment_id: source.comment,
            attachment_id: source.attachment,
            text: snippet.fragment().to_string(),
            html: snippet.to_html(),
        };
        match best.iter_mut().find(|(f, _, _)| *f == source.field) {
            Some(entry) if entry.1 < marks => *entry = (source.field, marks, highlight),
            Some(_) => {}
            None => best.push((source.field, marks, highlight)),
        }
    }
    best.sort_by_key(|(f, _, _)| TextField::ALL.iter().position(|x| x == f));
    best.into_iter().take(HIGHLIGHTS).map(|(_, _, h)| h).collect()
}
