// A stock WebsocketProvider writes one paragraph into a note and leaves once a second
// provider, opened afterwards, reads it back from the server. Used by tests/api/search.rs.
//
//   node write.mjs <ws://…/tickets> <ticket-id>/note <token> <token-for-reading> <text>
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [serverUrl, room, token, readToken, text] = process.argv.slice(2)

function open (token) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(serverUrl, room, doc, { WebSocketPolyfill: WebSocket, params: { access_token: token }, disableBc: true })
  return { doc, provider }
}

function synced ({ provider }) {
  return new Promise((resolve, reject) => {
    if (provider.synced) return resolve()
    const timer = setTimeout(() => reject(new Error('not synced in 15 s')), 15000)
    provider.once('sync', (isSynced) => { if (isSynced) { clearTimeout(timer); resolve() } })
  })
}

const writer = open(token)
await synced(writer)
writer.doc.transact(() => {
  const p = new Y.XmlElement('paragraph')
  p.insert(0, [new Y.XmlText(text)])
  writer.doc.getXmlFragment('default').insert(0, [p])
})
const reader = open(readToken)
await synced(reader)
const deadline = Date.now() + 15000
while (!reader.doc.getXmlFragment('default').toString().includes(text)) {
  if (Date.now() > deadline) throw new Error('the server did not keep the paragraph')
  await new Promise((resolve) => setTimeout(resolve, 10))
}
console.log('written')
writer.provider.destroy()
reader.provider.destroy()
process.exit(0)
