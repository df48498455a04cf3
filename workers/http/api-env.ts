/** The Hono environment of the API routes: bindings, and what middleware puts on the context. */
import type { Caller } from "../auth/caller";
import type { AgentNode } from "../nodes/tokens";
import type { RequestDb } from "./database";
import type { AppVariables } from "./request-context";

export type ApiVariables = AppVariables & {
  pg: RequestDb;
  /** Set by `authenticate` on the public routes. */
  caller: Caller;
  /** Set by `authenticateNode` on the agent routes. */
  node: AgentNode;
  /**
   * Set by `rateLimit` on a POST with an `Idempotency-Key`: the limiter's verdict, still on its way
   * while the key is claimed (rejects with the 429). `idempotency` waits for it.
   */
  rateGate?: Promise<void>;
  /**
   * Set by a route whose answer holds a secret shown once (a new API key, a node token), or that
   * found such a thing already made by a dead request holding the same key (`status`: the status
   * that request would have answered): `idempotency` then keeps no copy of the secret, and answers
   * a replay with what was made, not the secret.
   */
  secretAnswer?: { id: string; status?: number };
  /**
   * Set by `idempotency` on a request holding an `Idempotency-Key`: the id what it makes must take
   * (the same for a retry that takes over a dead claim), so nothing is made twice.
   */
  idempotentId?: string;
};

export type ApiEnv = { Bindings: Env; Variables: ApiVariables };
