/** The agent routes' credential: a per-node token (never a user token or API key). */
import type { MiddlewareHandler } from "hono";
import { bearer } from "../auth/caller";
import type { ApiEnv } from "../http/api-env";
import { ApiError } from "../http/errors";
import { verifyNodeToken } from "./tokens";

export const authenticateNode: MiddlewareHandler<ApiEnv> = async (c, next) => {
  const credential = bearer(c.req.header("authorization"));
  const node = await verifyNodeToken(c.get("pg").db, credential);
  if (!node) {
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
