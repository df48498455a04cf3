/**
 * Recent positive node-token verifications, kept in the isolate for a few seconds, so an agent's
 * long polls and event reports (several per job, each a database round trip and, locally, a new
 * connection) need no database while the answer cannot have changed much.
 *
 * The price is a window: a token revoked or rotated elsewhere still passes the routes that use this
 * cache, in an isolate that verified it within the last `ttlMs`. Revoking or rotating through
 * `revokeNodeToken`/`issueNodeToken` forgets the node in the isolate that did it at once. Only
 * `yes` answers are kept: an unknown token always asks the database. docs/security.md says which
 * routes use it.
 */
import type { AgentNode } from "./agent-node";

/** How long a verification is reused. */
export const NODE_TOKEN_CACHE_MS = 10_000;
/** More distinct tokens than this in one isolate: the oldest entries go first. */
export const NODE_TOKEN_CACHE_ENTRIES = 10_000;

interface Entry {
  node: AgentNode;
  until: number;
}

export class NodeTokenCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly ttlMs = NODE_TOKEN_CACHE_MS,
    private readonly maxEntries = NODE_TOKEN_CACHE_ENTRIES,
  ) {}

  /** The node verified for this token hash within the last `ttlMs`, or null. */
  get(hash: string, now: number): AgentNode | null {
    const entry = this.entries.get(hash);
    if (!entry) return null;
    if (entry.until <= now) {
      this.entries.delete(hash);
      return null;
    }
    return entry.node;
  }

  set(hash: string, node: AgentNode, now: number): void {
    // Re-inserted, so the map's order stays oldest first.
    this.entries.delete(hash);
    this.entries.set(hash, { node, until: now + this.ttlMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /** Drops every verification of this node's tokens (its token was rotated or revoked). */
  forgetNode(nodeId: string): void {
    for (const [hash, entry] of this.entries) if (entry.node.id === nodeId) this.entries.delete(hash);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** The isolate's cache, shared by its requests. */
export const recentNodeTokens = new NodeTokenCache();
