// Follows one edgedesk event stream with a stock EventSource, as a browser tab does: the
// stream token rides in the URL, reconnection (with Last-Event-ID) is the library's own.
// Prints one JSON line per happening: {"open":true}, {"id","type","data"}, {"error"}.
// Usage: node follow.mjs <url> <events to wait for>
import { EventSource } from 'eventsource';

const [url, want] = process.argv.slice(2);
let left = Number(want);
const source = new EventSource(url);
const say = (line) => process.stdout.write(JSON.stringify(line) + '\n');

const received = (event) => {
  say({ id: event.lastEventId, type: event.type, data: JSON.parse(event.data) });
  left -= 1;
  if (left === 0) {
    source.close();
    process.exit(0);
  }
};
for (const type of ['ticket.created', 'ticket.updated', 'ticket.deleted', 'comment.created', 'reset']) {
  source.addEventListener(type, received);
}
source.onopen = () => say({ open: true });
source.onerror = (event) => say({ error: String(event.message ?? event.type) });
