//! A y-websocket client on yrs and tokio-tungstenite, for the notes tests: it syncs as the
//! npm `WebsocketProvider` does (step 1 on open, step 2 in answer to the server's step 1,
//! every local change as an update) and edits the note where Tiptap keeps it: the first
//! paragraph of the `default` XmlFragment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgedesk::notes::protocol::{self, Incoming};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update, WriteTxn, XmlElementPrelim, XmlFragment, XmlOut, XmlTextPrelim, XmlTextRef};

const REMOTE: &str = "remote";

pub struct YClient {
    pub doc: Doc,
    out: mpsc::UnboundedSender<Message>,
    /// The close code and reason the server sent, once closed.
    closed: watch::Receiver<Option<(u16, String)>>,
    /// Frames received, in order (awareness included), for tests that look at the wire.
    pub received: Arc<Mutex<Vec<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for YClient {
    /// Dropping a client drops its connection, as closing a browser tab does.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl YClient {
    /// Opens `url` (`ws://…/note`, with `?access_token=` or with `bearer`). `Err(status)`
    /// when the server refuses before the upgrade.
    pub async fn connect(url: &str, bearer: Option<&str>) -> Result<Self, u16> {
        let mut request = url.into_client_request().expect("request");
        if let Some(token) = bearer {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        }
        let (ws, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(pair) => pair,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => return Err(response.status().as_u16()),
            Err(e) => panic!("cannot connect to {url}: {e}"),
        };
        let doc = Doc::new();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        let local = out.clone();
        doc.observe_update_v1("client", move |txn: &yrs::TransactionMut, event: &yrs::UpdateEvent| {
            if txn.origin().is_none_or(|o| o.as_ref() != REMOTE.as_bytes()) {
                let _ = local.send(Message::Binary(protocol::update(&event.update)));
            }
        })
        .expect("observer");
        let (closed_tx, closed) = watch::channel(None);
        let received = Arc::new(Mutex::new(Vec::new()));
        let (mut sink, mut stream) = ws.split();
        // As WebsocketProvider does on open: our state vector.
        let sv = doc.transact().state_vector();
        sink.send(Message::Binary(protocol::step1(&sv))).await.expect("step1");
        let remote_doc = doc.clone();
        let answer = out.clone();
        let seen = received.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = outgoing.recv() => match message {
                        Some(m) => if sink.send(m).await.is_err() { break },
                        None => break,
                    },
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Binary(bytes))) => {
                            seen.lock().unwrap().push(bytes.clone());
                            for message in protocol::decode_frame(&bytes).expect("the server sends good frames") {
                                match message {
                                    Incoming::Step1(sv) => {
                                        let diff = remote_doc.transact().encode_state_as_update_v1(&sv);
                                        let _ = answer.send(Message::Binary(protocol::step2(&diff)));
                                    }
                                    Incoming::Update { bytes, .. } => {
                                        let update = Update::decode_v1(&bytes).expect("update");
                                        remote_doc.transact_mut_with(REMOTE).apply_update(update).expect("apply");
                                    }
                                    _ => {}
                                }
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.as_ref().map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                            let _ = closed_tx.send(Some(code));
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            let _ = closed_tx.send(Some((1006, String::new())));
                            break;
                        }
                    },
                }
            }
        });
        Ok(Self { doc, out, closed, received, task })
    }

    /// The note's first paragraph's text, created when missing.
    fn paragraph(&self) -> XmlTextRef {
        let mut txn = self.doc.transact_mut();
        let fragment = txn.get_or_insert_xml_fragment(protocol::TEXT_FIELD);
        if let Some(XmlOut::Element(p)) = fragment.get(&txn, 0)
            && let Some(XmlOut::Text(t)) = p.get(&txn, 0)
        {
            return t;
        }
        let p = fragment.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
        p.insert(&mut txn, 0, XmlTextPrelim::new(""))
    }

    pub fn insert(&self, index: u32, text: &str) {
        let t = self.paragraph();
        let mut txn = self.doc.transact_mut();
        let index = index.min(t.len(&txn));
        t.insert(&mut txn, index, text);
    }

    pub fn delete(&self, index: u32, len: u32) {
        let t = self.paragraph();
        let mut txn = self.doc.transact_mut();
        let total = t.len(&txn);
        if index < total {
            t.remove_range(&mut txn, index, len.min(total - index));
        }
    }

    pub fn len(&self) -> u32 {
        let txn = self.doc.transact();
        match txn.get_xml_fragment(protocol::TEXT_FIELD).and_then(|f| f.get(&txn, 0)) {
            Some(XmlOut::Element(p)) => match p.get(&txn, 0) {
                Some(XmlOut::Text(t)) => t.len(&txn),
                _ => 0,
            },
            _ => 0,
        }
    }

    pub fn text(&self) -> String {
        protocol::plain_text(&self.doc)
    }

    /// The XML form, for comparing whole documents.
    pub fn xml(&self) -> String {
        let txn = self.doc.transact();
        txn.get_xml_fragment(protocol::TEXT_FIELD).map(|f| f.get_string(&txn)).unwrap_or_default()
    }

    pub fn send_raw(&self, frame: Vec<u8>) {
        let _ = self.out.send(Message::Binary(frame.into()));
    }

    pub fn send_text_frame(&self, text: &str) {
        let _ = self.out.send(Message::Text(text.into()));
    }

    /// Waits until the note reads `expected`; panics with what it reads after `within`.
    pub async fn wait_text(&self, expected: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.text() != expected {
            if tokio::time::Instant::now() > deadline {
                panic!("note text did not become {expected:?} in {within:?}: it is {:?}", self.text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `f` holds.
    pub async fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !f(self) {
            if tokio::time::Instant::now() > deadline {
                panic!("{what} did not happen in {within:?} (text {:?})", self.text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The close code the server sent, waiting up to `within`; `None` if still open.
    pub async fn closed_with(&self, within: Duration) -> Option<(u16, String)> {
        let mut closed = self.closed.clone();
        let _ = tokio::time::timeout(within, closed.wait_for(|c| c.is_some())).await;
        closed.borrow().clone()
    }

    pub fn is_open(&self) -> bool {
        self.closed.borrow().is_none()
    }
}
