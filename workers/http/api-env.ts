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
};

export type ApiEnv = { Bindings: Env; Variables: ApiVariables };
