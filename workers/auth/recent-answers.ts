/**
 * Recent positive answers to a credential check, kept in the isolate for a few seconds, so the
 * requests that follow need no database while the answer cannot have changed much. Used for node
 * tokens (workers/nodes/token-cache.ts) and API keys (workers/auth/caller.ts).
 *
 * The price is a window: a credential revoked elsewhere (or its account changed) still passes, in an
 * isolate that checked it within the last `ttlMs`. Whoever revokes through the API forgets the
 * answers in its own isolate at once (`forget`). Only `yes` answers are kept: an unknown credential
 * always asks the database. docs/api.md says which routes use them.
 */

/** How long an answer is reused. */
export const RECENT_ANSWER_MS = 10_000;
/** More distinct credentials than this in one isolate: the oldest entries go first. */
export const RECENT_ANSWER_ENTRIES = 10_000;

interface Entry<V> {
  value: V;
  until: number;
}

export class RecentAnswers<V> {
  private readonly entries = new Map<string, Entry<V>>();

  constructor(
    private readonly ttlMs = RECENT_ANSWER_MS,
    private readonly maxEntries = RECENT_ANSWER_ENTRIES,
  ) {}

  /** The answer kept for this credential hash within the last `ttlMs`, or null. */
  get(hash: string, now: number): V | null {
    const entry = this.entries.get(hash);
    if (!entry) return null;
    if (entry.until <= now) {
      this.entries.delete(hash);
      return null;
    }
    return entry.value;
  }

  /** Keeps `value` for `ttlMs`, or until `notAfter` (ms) if sooner (e.g. the credential's expiry). */
  set(hash: string, value: V, now: number, notAfter = Number.POSITIVE_INFINITY): void {
    // Re-inserted, so the map's order stays oldest first.
    this.entries.delete(hash);
    this.entries.set(hash, { value, until: Math.min(now + this.ttlMs, notAfter) });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /** Drops every answer that matches (a credential revoked or rotated in this isolate). */
  forget(matches: (value: V) => boolean): void {
    for (const [hash, entry] of this.entries) if (matches(entry.value)) this.entries.delete(hash);
  }

  /** Drops everything. */
  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
