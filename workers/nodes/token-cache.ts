/**
 * Recent positive node-token verifications (workers/auth/recent-answers.ts), so an agent's long
 * polls and event reports (several per job, each a database round trip) need no database while the
 * answer cannot have changed much. Revoking or rotating through `revokeNodeToken`/`issueNodeToken`
 * forgets the node in the isolate that did it at once.
 */
import { RecentAnswers } from "../auth/recent-answers";
import type { AgentNode } from "./agent-node";

export class NodeTokenCache extends RecentAnswers<AgentNode> {
  /** Drops every verification of this node's tokens (its token was rotated or revoked). */
  forgetNode(nodeId: string): void {
    this.forget((node) => node.id === nodeId);
  }
}

/** The isolate's cache, shared by its requests. */
export const recentNodeTokens = new NodeTokenCache();
