//! The y-websocket wire format, read defensively: every byte from a client is decoded here,
//! behind `catch_unwind`, into messages the document can trust, or refused with the reason
//! that closes the connection.
//!
//! A frame is one or more messages, each `varUint type` then its body: `0` sync (`varUint`
//! sub-type 0 step1 with a state vector, 1 step2 or 2 update with an update, each as a
//! `varUint8Array`), `1` awareness (`varUint8Array`), `2` auth (`varUint` permission, and a
//! reason string when denied), `3` query-awareness (no body). Anything else, trailing
//! bytes, a truncated value or a payload that does not decode is a bad frame.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::AwarenessUpdate;
use yrs::types::text::YChange;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{Any, Doc, Out, ReadTxn, StateVector, Text, Transact, Update, XmlFragment, XmlOut};

pub const MSG_SYNC: u32 = 0;
pub const MSG_AWARENESS: u32 = 1;
pub const MSG_AUTH: u32 = 2;
pub const MSG_QUERY_AWARENESS: u32 = 3;
pub const SYNC_STEP1: u32 = 0;
pub const SYNC_STEP2: u32 = 1;
pub const SYNC_UPDATE: u32 = 2;

/// The shared type a note's text is read from: an `XmlFragment` named `default`, where
/// Tiptap's Collaboration extension (and y-prosemirror's `ySyncPlugin` with its usual
/// setup) keeps the document.
pub const TEXT_FIELD: &str = "default";

/// One message from a client, decoded and checked.
pub enum Incoming {
    /// The client's state vector: answer with what it lacks.
    Step1(StateVector),
    /// Content (a step2 or an update), with its raw bytes as they will be stored.
    Update {
        bytes: Bytes,
        update: Update,
    },
    /// Presence, with the frame to relay as it came.
    Awareness {
        frame: Bytes,
        update: AwarenessUpdate,
    },
    QueryAwareness,
    /// An auth message (the server decides access before the upgrade): ignored.
    Auth,
}

/// Why a frame was refused (the close reason; at most 123 bytes on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame(pub &'static str);

/// Decodes a whole frame. Never panics: a panic inside yrs is caught and reported as a bad
/// frame like any other.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Incoming>, BadFrame> {
    match catch_unwind(AssertUnwindSafe(|| decode_messages(frame))) {
        Ok(result) => result,
        Err(_) => Err(BadFrame("frame could not be decoded")),
    }
}

fn decode_messages(frame: &[u8]) -> Result<Vec<Incoming>, BadFrame> {
    let mut cursor = Cursor::new(frame);
    let mut out = Vec::with_capacity(1);
    if !cursor.has_content() {
        return Err(BadFrame("empty frame"));
    }
    while cursor.has_content() {
        let start = cursor.next;
        let kind: u32 = cursor.read_var().map_err(|_| BadFrame("truncated message type"))?;
        match kind {
            MSG_SYNC => {
                let sub: u32 = cursor.read_var().map_err(|_| BadFrame("truncated sync message"))?;
                let payload = cursor.read_buf().map_err(|_| BadFrame("truncated sync payload"))?;
                match sub {
                    SYNC_STEP1 => {
                        let sv = StateVector::decode_v1(payload).map_err(|_| BadFrame("malformed state vector"))?;
                        out.push(Incoming::Step1(sv));
                    }
                    SYNC_STEP2 | SYNC_UPDATE => {
                        let update = Update::decode_v1(payload).map_err(|_| BadFrame("malformed update"))?;
                        if !update.is_empty() {
                            out.push(Incoming::Update { bytes: Bytes::copy_from_slice(payload), update });
                        }
                    }
                    _ => return Err(BadFrame("unknown sync message")),
                }
            }
            MSG_AWARENESS => {
                let payload = cursor.read_buf().map_err(|_| BadFrame("truncated awareness payload"))?;
                let update = AwarenessUpdate::decode_v1(payload).map_err(|_| BadFrame("malformed awareness update"))?;
                // Other clients JSON.parse each state: only well-formed JSON is relayed.
                for entry in update.clients.values() {
                    serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).map_err(|_| BadFrame("awareness state is not JSON"))?;
                }
                out.push(Incoming::Awareness { frame: Bytes::copy_from_slice(&frame[start..cursor.next]), update });
            }
            MSG_AUTH => {
                let permission: u32 = cursor.read_var().map_err(|_| BadFrame("truncated auth message"))?;
                if permission == 0 {
                    cursor.read_string().map_err(|_| BadFrame("malformed auth reason"))?;
                }
                out.push(Incoming::Auth);
            }
            MSG_QUERY_AWARENESS => out.push(Incoming::QueryAwareness),
            _ => return Err(BadFrame("unknown message type")),
        }
    }
    Ok(out)
}

/// `sync step1` with this state vector.
pub fn step1(sv: &StateVector) -> Bytes {
    sync_frame(SYNC_STEP1, &sv.encode_v1())
}

/// `sync step2` carrying `update`.
pub fn step2(update: &[u8]) -> Bytes {
    sync_frame(SYNC_STEP2, update)
}

/// `sync update` carrying `update`.
pub fn update(update: &[u8]) -> Bytes {
    sync_frame(SYNC_UPDATE, update)
}

fn sync_frame(sub: u32, payload: &[u8]) -> Bytes {
    let mut enc = EncoderV1::new();
    enc.write_var(MSG_SYNC);
    enc.write_var(sub);
    enc.write_buf(payload);
    Bytes::from(enc.to_vec())
}

/// An awareness message carrying `update`.
pub fn awareness(update: &AwarenessUpdate) -> Bytes {
    let mut enc = EncoderV1::new();
    enc.write_var(MSG_AWARENESS);
    enc.write_buf(update.encode_v1());
    Bytes::from(enc.to_vec())
}

/// The note's plain text: the text of its `default` XmlFragment, block elements (paragraphs,
/// headings, list items) on lines of their own.
pub fn plain_text(doc: &Doc) -> String {
    let txn = doc.transact();
    let Some(fragment) = txn.get_xml_fragment(TEXT_FIELD) else { return String::new() };
    let mut out = String::new();
    for child in fragment.children(&txn) {
        write_node(&txn, &child, &mut out);
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

fn write_node<T: ReadTxn>(txn: &T, node: &XmlOut, out: &mut String) {
    match node {
        XmlOut::Text(text) => {
            for chunk in text.diff(txn, YChange::identity) {
                if let Out::Any(Any::String(s)) = chunk.insert {
                    out.push_str(&s);
                }
            }
        }
        XmlOut::Element(element) => {
            for child in element.children(txn) {
                write_node(txn, &child, out);
            }
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
        }
        XmlOut::Fragment(fragment) => {
            for child in fragment.children(txn) {
                write_node(txn, &child, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{XmlElementPrelim, XmlTextPrelim};

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let doc = Doc::new();
        let sv = doc.transact().state_vector();
        let decoded = decode_frame(&step1(&sv)).unwrap();
        assert!(matches!(decoded.as_slice(), [Incoming::Step1(_)]));
        assert_eq!(decode_frame(&[]).err(), Some(BadFrame("empty frame")));
        assert_eq!(decode_frame(&[9]).err(), Some(BadFrame("unknown message type")));
        assert_eq!(decode_frame(&[0, 2, 200]).err(), Some(BadFrame("truncated sync payload")));
        assert_eq!(decode_frame(&[0xff, 0xff, 0xff]).err(), Some(BadFrame("truncated message type")));
        assert_eq!(decode_frame(&[0, 2, 3, 1, 2, 3]).err(), Some(BadFrame("malformed update")));
        // An awareness state that is not JSON would break every other client's JSON.parse.
        let mut enc = EncoderV1::new();
        enc.write_var(1u32);
        enc.write_var(7u64);
        enc.write_var(1u32);
        enc.write_string("{not json");
        let mut frame = EncoderV1::new();
        frame.write_var(MSG_AWARENESS);
        frame.write_buf(enc.to_vec());
        assert_eq!(decode_frame(&frame.to_vec()).err(), Some(BadFrame("awareness state is not JSON")));
    }

    /// Thousands of random and mutated frames: decoding never panics and never hands on an
    /// update that does not decode again.
    #[test]
    fn random_and_mutated_frames_never_panic() {
        use rand::{RngExt, SeedableRng};
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment(TEXT_FIELD);
        {
            let mut txn = doc.transact_mut();
            let p = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            p.push_back(&mut txn, XmlTextPrelim::new("a real edit with ü and €"));
        }
        let valid = update(&doc.transact().encode_state_as_update_v1(&StateVector::default()));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut refused = 0;
        for round in 0..50_000 {
            let frame: Vec<u8> = match round % 3 {
                0 => (0..rng.random_range(0..48)).map(|_| rng.random()).collect(),
                1 => valid[..rng.random_range(0..valid.len())].to_vec(),
                _ => {
                    let mut f = valid.to_vec();
                    for _ in 0..rng.random_range(1..8) {
                        let at = rng.random_range(0..f.len());
                        f[at] = rng.random();
                    }
                    f
                }
            };
            match decode_frame(&frame) {
                Err(_) => refused += 1,
                Ok(messages) => {
                    for m in messages {
                        if let Incoming::Update { bytes, .. } = m {
                            assert!(Update::decode_v1(&bytes).is_ok());
                        }
                    }
                }
            }
        }
        assert!(refused > 40_000, "most garbage is refused: {refused}");
    }

    #[test]
    fn the_text_is_the_fragments_text_with_blocks_on_their_own_lines() {
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment(TEXT_FIELD);
        {
            let mut txn = doc.transact_mut();
            let p1 = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            p1.push_back(&mut txn, XmlTextPrelim::new("Printer on fire"));
            let p2 = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let t = p2.push_back(&mut txn, XmlTextPrelim::new("call the vendor"));
            t.format(&mut txn, 0, 4, [("bold".into(), true.into())].into_iter().collect());
        }
        assert_eq!(plain_text(&doc), "Printer on fire\ncall the vendor");
        assert_eq!(plain_text(&Doc::new()), "");
    }
}
