// A form's submission: whether it is under way and what the server last refused, so every
// form shows the same busy state and the same words for an error.
import { ApiError } from './api';

export class Submission {
  busy = $state(false);
  error = $state<ApiError | null>(null);

  /** Runs `work`, keeping its error for the form; true when it succeeded. */
  async run(work: () => Promise<void>): Promise<boolean> {
    this.busy = true;
    this.error = null;
    try {
      await work();
      return true;
    } catch (e) {
      this.error = e instanceof ApiError ? e : new ApiError(0, undefined);
      return false;
    } finally {
      this.busy = false;
    }
  }
}
