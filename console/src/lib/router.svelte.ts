// A small history router: the address bar is the state (saved views are URLs), links are
// plain <a href> elements that the click handler below turns into pushState.

export type Route =
  | { name: 'setup' }
  | { name: 'login' }
  | { name: 'home' }
  | { name: 'workspaces' }
  | { name: 'queue'; ws: string }
  | { name: 'ticket'; ws: string; id: string }
  | { name: 'settings'; ws: string; tab: string }
  | { name: 'account' }
  | { name: 'missing' };

const PATTERNS: [RegExp, (m: RegExpMatchArray) => Route][] = [
  [/^\/$/, () => ({ name: 'home' })],
  [/^\/setup$/, () => ({ name: 'setup' })],
  [/^\/login$/, () => ({ name: 'login' })],
  [/^\/workspaces$/, () => ({ name: 'workspaces' })],
  [/^\/account$/, () => ({ name: 'account' })],
  [/^\/w\/([^/]+)$/, (m) => ({ name: 'queue', ws: m[1] })],
  [/^\/w\/([^/]+)\/t\/([^/]+)$/, (m) => ({ name: 'ticket', ws: m[1], id: m[2] })],
  [/^\/w\/([^/]+)\/settings(?:\/([a-z-]+))?$/, (m) => ({ name: 'settings', ws: m[1], tab: m[2] ?? 'members' })],
];

function parse(path: string): Route {
  for (const [pattern, build] of PATTERNS) {
    const m = path.match(pattern);
    if (m) return build(m);
  }
  return { name: 'missing' };
}

class Router {
  route = $state<Route>(parse(location.pathname));
  query = $state(new URLSearchParams(location.search));

  constructor() {
    addEventListener('popstate', () => this.sync());
    document.addEventListener('click', (event) => {
      const link = (event.target as Element | null)?.closest?.('a');
      if (!link || event.defaultPrevented || event.button !== 0) return;
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      if (link.target || link.hasAttribute('download') || link.origin !== location.origin) return;
      if (link.pathname.startsWith('/api/')) return;
      event.preventDefault();
      this.go(link.pathname + link.search);
    });
  }

  go(to: string, replace = false) {
    if (to === location.pathname + location.search) return;
    history[replace ? 'replaceState' : 'pushState'](null, '', to);
    this.sync();
    // A new page starts at its top; a changed view of the same page stays where it was.
    if (!replace) scrollTo(0, 0);
  }

  /** Changes the query string of the current page (a saved view), replacing history. */
  setQuery(params: Record<string, string | undefined>) {
    const next = new URLSearchParams(location.search);
    for (const [key, value] of Object.entries(params)) {
      if (value) next.set(key, value);
      else next.delete(key);
    }
    const search = next.toString();
    this.go(location.pathname + (search ? `?${search}` : ''), true);
  }

  private sync() {
    this.route = parse(location.pathname);
    this.query = new URLSearchParams(location.search);
  }
}

export const router = new Router();
