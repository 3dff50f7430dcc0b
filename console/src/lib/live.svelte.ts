// One EventSource per open workspace. Every screen of that workspace subscribes here, so the
// queue and the open ticket stay current from one connection.
//
// Stream tokens live 60 s, so the browser's own reconnect (which reuses the URL) cannot be
// relied on: on any error the stream is closed and reopened with a fresh token and
// `last_event_id` = the last event seen, which replays exactly what was missed. An
// `event: reset` means replay cannot bring us up to date: subscribers reload what they show.
import { streamToken, type SyncEvent } from './api';

export type Listener = (event: SyncEvent) => void;
export type Connection = 'connecting' | 'live' | 'offline';

const BACKOFF_MS = [500, 1000, 2000, 5000, 10000, 20000];

class LiveWorkspace {
  state = $state<Connection>('connecting');
  private source: EventSource | null = null;
  private last: number | null = null;
  private listeners = new Set<Listener>();
  private resets = new Set<() => void>();
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;

  constructor(readonly workspace: string) {
    this.open();
    addEventListener('online', this.retryNow);
    document.addEventListener('visibilitychange', this.retryNow);
  }

  subscribe(listener: Listener, onReset?: () => void): () => void {
    this.listeners.add(listener);
    if (onReset) this.resets.add(onReset);
    return () => {
      this.listeners.delete(listener);
      if (onReset) this.resets.delete(onReset);
    };
  }

  /** Lets the connection go (the page is hidden away); `resume` reopens it after the last event seen. */
  pause() {
    this.source?.close();
    this.source = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  resume() {
    if (!this.closed && !this.source && !this.timer) this.open();
  }

  close() {
    this.closed = true;
    this.source?.close();
    if (this.timer) clearTimeout(this.timer);
    removeEventListener('online', this.retryNow);
    document.removeEventListener('visibilitychange', this.retryNow);
  }

  private retryNow = () => {
    if (this.closed || this.state !== 'offline' || document.visibilityState === 'hidden') return;
    if (this.timer) clearTimeout(this.timer);
    this.open();
  };

  private async open() {
    this.timer = null;
    if (this.closed) return;
    let token: string;
    try {
      token = await streamToken(this.workspace, 'events');
    } catch {
      return this.retryLater();
    }
    if (this.closed) return;
    const params = new URLSearchParams({ access_token: token });
    if (this.last !== null) params.set('last_event_id', String(this.last));
    const source = new EventSource(`/api/workspaces/${this.workspace}/events?${params}`);
    this.source = source;
    source.onopen = () => {
      this.attempt = 0;
      this.state = 'live';
    };
    source.onerror = () => {
      source.close();
      if (this.source === source) this.retryLater();
    };
    source.onmessage = (message) => this.deliver(message);
    source.addEventListener('reset', (message) => {
      try {
        this.last = JSON.parse((message as MessageEvent).data).sync_id ?? null;
      } catch {
        this.last = null;
      }
      for (const reset of this.resets) reset();
    });
    // Named events (`event: ticket.created`, …) do not reach onmessage: listen to each kind.
    for (const kind of KINDS) source.addEventListener(kind, (message) => this.deliver(message as MessageEvent));
  }

  private deliver(message: MessageEvent) {
    let event: SyncEvent;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (this.last !== null && event.sync_id <= this.last) return;
    this.last = event.sync_id;
    for (const listener of this.listeners) listener(event);
  }

  private retryLater() {
    if (this.closed) return;
    this.state = 'offline';
    const wait = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    // Full jitter, as the server's own retries.
    this.timer = setTimeout(() => this.open(), Math.random() * wait);
  }
}

const KINDS = [
  'ticket.created', 'ticket.updated', 'ticket.deleted', 'comment.created', 'link.created', 'link.deleted',
  'attachment.created', 'attachment.versioned', 'attachment.updated', 'attachment.deleted', 'member.added',
  'member.updated', 'member.removed', 'note.updated', 'note.text_updated', 'notification.created',
  'notification.updated', 'mail.queued', 'mail.sending', 'mail.sent', 'mail.retrying', 'mail.failed',
];

const open = new Map<string, LiveWorkspace>();

// A page that is left (or put in the back-forward cache) lets its streams go, so it holds no
// connection while hidden; restored, it reopens them where they left off.
addEventListener('pagehide', () => {
  for (const stream of open.values()) stream.pause();
});
addEventListener('pageshow', (event) => {
  if (event.persisted) for (const stream of open.values()) stream.resume();
});

/** The live stream of a workspace, opened on first use and kept while the tab lives. */
export function live(workspace: string): LiveWorkspace {
  let stream = open.get(workspace);
  if (!stream) {
    stream = new LiveWorkspace(workspace);
    open.set(workspace, stream);
  }
  return stream;
}

/** Closes every stream (on sign-out). */
export function closeAll() {
  for (const stream of open.values()) stream.close();
  open.clear();
}
