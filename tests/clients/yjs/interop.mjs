// Two stock WebsocketProviders edit one note at once, a third joins later; prints what each
// ended with as one JSON line. Used by tests/api/notes_npm.rs.
//
//   node interop.mjs <ws://…/tickets> <ticket-id>/note <token-a> <token-b> <token-c> <edits>
//
// The providers share a process, so BroadcastChannel is off: every byte between them goes
// through the server.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [serverUrl, room, tokenA, tokenB, tokenC, editsArg] = process.argv.slice(2)
const edits = Number(editsArg || 1000)

function open (token, name) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket,
    params: { access_token: token },
    disableBc: true
  })
  provider.awareness.setLocalStateField('user', { name })
  return { doc, provider }
}

function synced ({ provider }) {
  return new Promise((resolve, reject) => {
    if (provider.synced) return resolve()
    const timer = setTimeout(() => reject(new Error('not synced in 15 s')), 15000)
    provider.once('sync', (isSynced) => { if (isSynced) { clearTimeout(timer); resolve() } })
  })
}

async function until (what, f, ms = 30000) {
  const deadline = Date.now() + ms
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

function paragraphText (doc) {
  const p = doc.getXmlFragment('default').get(0)
  return p instanceof Y.XmlElement ? p.get(0) : null
}

function plain (doc) {
  return doc.getXmlFragment('default').toArray().map((node) =>
    node instanceof Y.XmlElement
      ? node.toArray().map((t) => (t instanceof Y.XmlText ? t.toDelta().map((d) => d.insert).join('') : '')).join('')
      : ''
  ).join('\n')
}

// A small deterministic generator, so a failure can be replayed.
let seed = 12345
function random (n) {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed % n
}

const a = open(tokenA, 'Ann')
const b = open(tokenB, 'Bob')
await Promise.all([synced(a), synced(b)])

// One paragraph, made by A, seen by B before anyone types.
a.doc.transact(() => {
  const p = new Y.XmlElement('paragraph')
  p.insert(0, [new Y.XmlText('')])
  a.doc.getXmlFragment('default').insert(0, [p])
})
await until('B sees the paragraph', () => paragraphText(b.doc) !== null)

// Presence: B sees Ann's cursor state.
await until('awareness reaches B', () => [...b.provider.awareness.getStates().values()].some((s) => s.user && s.user.name === 'Ann'))

let inserts = 0
for (let i = 0; i < edits; i++) {
  for (const { doc } of [a, b]) {
    const t = paragraphText(doc)
    const len = t.length
    if (len > 20 && random(10) < 3) {
      const at = random(len)
      t.delete(at, Math.min(1 + random(3), len - at))
    } else {
      t.insert(random(len + 1), doc === a.doc ? 'a' : 'b')
      inserts++
    }
  }
  // Let the sockets breathe now and then, so edits really interleave on the wire.
  if (i % 20 === 0) await new Promise((resolve) => setImmediate(resolve))
}
await until('A and B converge', () => a.doc.getXmlFragment('default').toString() === b.doc.getXmlFragment('default').toString() &&
  a.provider.wsconnected && b.provider.wsconnected && plain(a.doc) === plain(b.doc))
// Quiet for a moment: nothing more is in flight.
await new Promise((resolve) => setTimeout(resolve, 300))

const c = open(tokenC, 'Cy')
await synced(c)
await until('C has the whole note', () => plain(c.doc) === plain(a.doc))

console.log(JSON.stringify({
  text: plain(a.doc),
  same_ab: plain(a.doc) === plain(b.doc),
  same_c: plain(c.doc) === plain(a.doc),
  xml_equal: a.doc.getXmlFragment('default').toString() === c.doc.getXmlFragment('default').toString(),
  awareness: true,
  inserts
}))
for (const { provider } of [a, b, c]) provider.destroy()
process.exit(0)
