// What the queue's filters mean on the client, for live events: the same rules as the
// server's list filter (status, priority, assignee or `none`, requester, tag).
import type { Priority, Status, Ticket } from './api';

export type Filter = { status?: Status; priority?: Priority; assignee?: string; requester?: string; tag?: string };
export type Sort = { sort: 'updated_at' | 'created_at'; order: 'desc' | 'asc' };

export function matches(ticket: Ticket, filter: Filter): boolean {
  if (filter.status && ticket.status !== filter.status) return false;
  if (filter.priority && ticket.priority !== filter.priority) return false;
  if (filter.assignee === 'none' ? ticket.assignee_id : filter.assignee && ticket.assignee_id !== filter.assignee) return false;
  if (filter.requester && ticket.requester_id !== filter.requester) return false;
  if (filter.tag && !ticket.tags.includes(filter.tag.trim().toLowerCase())) return false;
  return true;
}

/** Puts `ticket` where `sort` places it in `list` (replacing its older copy), or removes it. */
/** `complete`: the list holds every match (no page is still to come), so the end is a place too. */
export function place(list: Ticket[], ticket: Ticket, keep: boolean, sort: Sort, complete: boolean): Ticket[] {
  const old = list.find((t) => t.id === ticket.id);
  if (old && old.version > ticket.version) return list;
  const rest = list.filter((t) => t.id !== ticket.id);
  if (!keep) return rest;
  const key = (t: Ticket) => Date.parse(t[sort.sort]);
  const before = (a: Ticket, b: Ticket) => (sort.order === 'desc' ? key(a) > key(b) : key(a) < key(b));
  const at = rest.findIndex((t) => before(ticket, t));
  if (at === -1) return complete ? [...rest, ticket] : rest;
  return [...rest.slice(0, at), ticket, ...rest.slice(at)];
}
