/**
 * Per-node agent tokens: `snt_<43 chars>`, shown once when issued; the node row keeps only its
 * SHA-256 (`nodes.agent_token_hash`). Issuing again replaces the token (rotation); revoking clears
 * it. The capacity manager calls these when it provisions nodes; operators through the API.
 */
import { and, eq, isNotNull, ne } from "drizzle-orm";
import { randomBase62, sha256Hex } from "../auth/secrets";
import type { Db } from "../db/client";
import { nodes } from "../db/schema";
import type { AgentNode } from "./agent-node";
import { type NodeTokenCache, recentNodeTokens } from "./token-cache";

export type { AgentNode };

export const NODE_TOKEN_PATTERN = /^snt_[A-Za-z0-9]{43}$/;

/** A fresh token for `nodeId`, replacing any earlier one. Null if the node does not exist. */
export async function issueNodeToken(db: Db, nodeId: string): Promise<string | null> {
  const token = `snt_${randomBase62(43)}`;
  const hash = await sha256Hex(token);
  const updated = await db
    .update(nodes)
    .set({ agentTokenHash: hash })
    .where(and(eq(nodes.id, nodeId), ne(nodes.state, "released")))
    .returning({ id: nodes.id });
  recentNodeTokens.forgetNode(nodeId);
  return updated.length === 1 ? token : null;
}

/**
 * The node a token belongs to, or null (unknown, revoked, malformed, or the node was released).
 * With `recent`, a verification that cache holds is reused and a new one is kept (token-cache.ts);
 * `db` may be a function, called only when the database is asked.
 */
export async function verifyNodeToken(
  db: Db | (() => Db),
  token: string,
  opts: { recent?: NodeTokenCache; now?: number } = {},
): Promise<AgentNode | null> {
  if (!NODE_TOKEN_PATTERN.test(token)) return null;
  const hash = await sha256Hex(token);
  const now = opts.now ?? Date.now();
  const known = opts.recent?.get(hash, now);
  if (known) return known;
  const [row] = await (typeof db === "function" ? db() : db)
    .select({
      id: nodes.id,
      region: nodes.region,
      zone: nodes.zone,
      gpuModel: nodes.gpuModel,
      gpuCount: nodes.gpuCount,
      cpuMilli: nodes.cpuMilli,
      memoryMib: nodes.memoryMib,
      state: nodes.state,
      blockId: nodes.blockId,
    })
    .from(nodes)
    .where(and(eq(nodes.agentTokenHash, hash), ne(nodes.state, "released")));
  if (row) opts.recent?.set(hash, row, now);
  return row ?? null;
}

/** True if the node had a token. */
export async function revokeNodeToken(db: Db, nodeId: string): Promise<boolean> {
  const updated = await db
    .update(nodes)
    .set({ agentTokenHash: null })
    .where(and(eq(nodes.id, nodeId), isNotNull(nodes.agentTokenHash)))
    .returning({ id: nodes.id });
  recentNodeTokens.forgetNode(nodeId);
  return updated.length === 1;
}
