/** The agent routes' credential: a per-node token (never a user token or API key). */
import type { MiddlewareHandler } from "hono";
import { bearer } from "../auth/caller";
import type { ApiEnv } from "../http/api-env";
import { ApiError } from "../http/errors";
import { clientAddress, countFailure, refuseIfBlocked } from "../http/failed-credentials";
import { recentNodeTokens } from "./token-cache";
import { verifyNodeToken } from "./tokens";

function nodeAuth(recent: boolean): MiddlewareHandler<ApiEnv> {
  return async (c, next) => {
    const credential = bearer(c.req.header("authorization"));
    const address = clientAddress(c);
    refuseIfBlocked(address);
    const node = await verifyNodeToken(() => c.get("pg").db, credential, recent ? { recent: recentNodeTokens } : {});
    if (!node) {
      // Counted against the address as a refused API credential is (failed-credentials.ts).
      const refused = address === null ? null : await countFailure(c, address);
      if (refused) throw refused;
      throw new ApiError(
        401,
        "invalid_node_token",
        "node token not recognised, revoked, or its node released",
        undefined,
        {
          "www-authenticate": 'Bearer realm="scalar-agent"',
        },
      );
    }
    c.set("node", node);
    return next();
  };
}

/** Asks the database on every request: registration, logs (which write there anyway), heartbeats. */
export const authenticateNode = nodeAuth(false);

/**
 * Reuses a verification from the last few seconds (token-cache.ts): for the long poll and event
 * reports, several per job, whose work is all in the region's scheduler.
 */
export const authenticateRecentNode = nodeAuth(true);
