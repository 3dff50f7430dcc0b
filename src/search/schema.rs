//! What the index holds: one document per live ticket, with each kind of text in its own
//! field (so a requester's query names only the public ones, and a highlight names where
//! it matched), the ticket list's filters as exact terms, and the ticket's whole indexed
//! state stored beside them, so that an event changes a document without reading the
//! database and a hit answers without it.
//!
//! [`SCHEMA_VERSION`] names this layout; an index written under another is rebuilt.

use serde::{Deserialize, Serialize};
use tantivy::schema::{BytesOptions, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{TantivyDocument, Term};

use crate::store::blobs::AttachmentId;
use crate::store::{CommentId, Ticket, TicketId};

/// The layout of documents and fields. Bump it when either changes: indexes of another
/// version are rebuilt from the log.
pub const SCHEMA_VERSION: u32 = 1;

/// The tokenizer of every text field, and of queries (see `query::words`): runs of letters
/// and digits, lower-cased; words over 40 bytes are dropped (nobody types them).
pub const TOKENIZER: &str = "edgedesk";

pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default()).filter(RemoveLongFilter::limit(40)).filter(LowerCaser).build()
}

/// A text field: where it is shown as matching, and who may match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TextField {
    Title,
    /// The ticket's number (`42` finds #42) and its tags.
    Meta,
    /// Public replies (the requester's messages and staff answers).
    Reply,
    /// Internal notes: staff only.
    Internal,
    /// The collaborative note: staff only.
    Note,
    /// Names and types of files on the ticket and its public replies.
    Attachment,
    /// Names and types of files on internal notes: staff only.
    InternalAttachment,
}

impl TextField {
    pub const ALL: [TextField; 7] =
        [Self::Title, Self::Meta, Self::Reply, Self::Internal, Self::Note, Self::Attachment, Self::InternalAttachment];

    /// Whether a requester's query may match it.
    pub fn public(self) -> bool {
        matches!(self, Self::Title | Self::Meta | Self::Reply | Self::Attachment)
    }

    /// How much a match here counts against a match elsewhere.
    pub fn boost(self) -> f32 {
        match self {
            Self::Title => 3.0,
            Self::Meta => 2.0,
            _ => 1.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Meta => "meta",
            Self::Reply => "reply",
            Self::Internal => "internal",
            Self::Note => "note",
            Self::Attachment => "attachment",
            Self::InternalAttachment => "internal_attachment",
        }
    }
}

/// The fields of the schema.
#[derive(Clone)]
pub struct Fields {
    pub schema: Schema,
    /// The ticket id: the document's key.
    pub ticket: Field,
    text: [Field; 7],
    pub status: Field,
    pub priority: Field,
    pub requester: Field,
    /// A user id, or [`UNASSIGNED`].
    pub assignee: Field,
    pub tag: Field,
    /// [`TicketState`] as JSON.
    pub state: Field,
}

/// The `assignee` term of an unassigned ticket.
pub const UNASSIGNED: &str = "none";

impl Fields {
    pub fn new() -> Self {
        let mut builder = Schema::builder();
        let indexing = TextFieldIndexing::default().set_tokenizer(TOKENIZER).set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let text_options = TextOptions::default().set_indexing_options(indexing);
        let ticket = builder.add_text_field("ticket", STRING | STORED);
        let text = TextField::ALL.map(|f| builder.add_text_field(f.name(), text_options.clone()));
        let status = builder.add_text_field("status", STRING);
        let priority = builder.add_text_field("priority", STRING);
        let requester = builder.add_text_field("requester", STRING);
        let assignee = builder.add_text_field("assignee", STRING);
        let tag = builder.add_text_field("tag", STRING);
        let state = builder.add_bytes_field("state", BytesOptions::default() | STORED);
        Self { schema: builder.build(), ticket, text, status, priority, requester, assignee, tag, state }
    }

    pub fn text(&self, field: TextField) -> Field {
        self.text[TextField::ALL.iter().position(|f| *f == field).unwrap_or(0)]
    }

    pub fn ticket_term(&self, ticket: TicketId) -> Term {
        Term::from_field_text(self.ticket, &ticket.to_string())
    }

    /// The document of `state`.
    pub fn document(&self, state: &TicketState) -> tantivy::Result<TantivyDocument> {
        let mut doc = TantivyDocument::default();
        let ticket = &state.ticket;
        doc.add_text(self.ticket, ticket.id.to_string());
        doc.add_text(self.text(TextField::Title), &ticket.title);
        doc.add_text(self.text(TextField::Meta), format!("{} {}", ticket.number, ticket.tags.join(" ")));
        for comment in &state.comments {
            let field = if comment.internal { TextField::Internal } else { TextField::Reply };
            doc.add_text(self.text(field), &comment.body);
        }
        if !state.note.is_empty() {
            doc.add_text(self.text(TextField::Note), &state.note);
        }
        for file in &state.files {
            let field = if file.internal { TextField::InternalAttachment } else { TextField::Attachment };
            doc.add_text(self.text(field), file.text());
        }
        doc.add_text(self.status, ticket.status.as_str());
        doc.add_text(self.priority, ticket.priority.as_str());
        doc.add_text(self.requester, ticket.requester_id.to_string());
        doc.add_text(self.assignee, ticket.assignee_id.map_or_else(|| UNASSIGNED.to_string(), |a| a.to_string()));
        for tag in &ticket.tags {
            doc.add_text(self.tag, tag);
        }
        let json = serde_json::to_vec(state).map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
        doc.add_bytes(self.state, &json);
        Ok(doc)
    }

    /// The state a stored document holds; `None` if it holds none readable.
    pub fn state_of(&self, doc: &TantivyDocument) -> Option<TicketState> {
        use tantivy::schema::Value;
        let bytes = doc.get_first(self.state)?.as_bytes()?;
        serde_json::from_slice(bytes).ok()
    }
}

impl Default for Fields {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything the index knows of one ticket: enough to rebuild its document when one event
/// changes one part, and to answer a hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketState {
    pub ticket: Ticket,
    pub comments: Vec<CommentText>,
    pub files: Vec<FileText>,
    /// The collaborative note's plain text.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommentText {
    pub id: CommentId,
    pub internal: bool,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileText {
    pub id: AttachmentId,
    pub comment: Option<CommentId>,
    pub name: String,
    pub content_type: String,
    pub internal: bool,
}

impl FileText {
    /// What is indexed and highlighted: the name, then the type.
    pub fn text(&self) -> String {
        format!("{} {}", self.name, self.content_type)
    }
}

impl TicketState {
    pub fn new(ticket: Ticket) -> Self {
        Self { ticket, comments: Vec::new(), files: Vec::new(), note: String::new() }
    }

    /// Adds or replaces a file (by id).
    pub fn set_file(&mut self, file: FileText) {
        match self.files.iter_mut().find(|f| f.id == file.id) {
            Some(existing) => *existing = file,
            None => self.files.push(file),
        }
    }

    /// Adds a comment once (an event handled twice after a crash adds nothing).
    pub fn add_comment(&mut self, comment: CommentText) {
        if !self.comments.iter().any(|c| c.id == comment.id) {
            self.comments.push(comment);
        }
    }
}
