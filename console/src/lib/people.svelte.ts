// The members of a workspace, for names and the assignee picker. Staff read the member list;
// a requester cannot, and sees names only for themselves.
import { api, isStaff, type Member, type Role } from './api';
import { session } from './session.svelte';

class People {
  members = $state<Record<string, Member[]>>({});

  async load(workspace: string, role: Role | undefined) {
    if (!isStaff(role)) return;
    const answer = await api.GET('/api/workspaces/{ws}/members', { params: { path: { ws: workspace } } });
    if (answer.data) this.members[workspace] = answer.data;
  }

  name(workspace: string, user: string | null | undefined): string {
    if (!user) return 'Nobody';
    if (user === session.user?.id) return session.user.name || session.user.email;
    const member = this.members[workspace]?.find((m) => m.user_id === user);
    return member ? member.name || member.email : 'Support';
  }

  staff(workspace: string): Member[] {
    return (this.members[workspace] ?? []).filter((m) => isStaff(m.role));
  }
}

export const people = new People();
