// Who is signed in and which workspaces they belong to.
import { api, ok, type User, type Workspace } from './api';

class Session {
  user = $state<User | null>(null);
  workspaces = $state<Workspace[]>([]);

  async load(): Promise<boolean> {
    const me = await api.GET('/api/me');
    if (!me.response.ok || !me.data) {
      this.user = null;
      return false;
    }
    this.user = me.data;
    await this.refreshWorkspaces();
    return true;
  }

  async refreshWorkspaces() {
    this.workspaces = await ok(api.GET('/api/workspaces'));
  }

  workspace(id: string): Workspace | undefined {
    return this.workspaces.find((w) => w.id === id);
  }

  async signOut() {
    await api.POST('/api/auth/logout');
    this.user = null;
    this.workspaces = [];
  }
}

export const session = new Session();
