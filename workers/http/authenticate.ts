/** Who is calling: resolves the bearer credential of a public route into `c.var.caller`. */
import type { MiddlewareHandler } from "hono";
import { endTime, startTime } from "hono/timing";
import { ACCOUNT_HEADER, bearer, type Caller, resolveCaller } from "../auth/caller";
import { tokenSettings } from "../auth/supabase-token";
import type { ApiEnv } from "./api-env";
import { ApiError } from "./errors";
import { clientAddress, countFailure, refuseIfBlocked } from "./failed-credentials";

export const authenticate: MiddlewareHandler<ApiEnv> = async (c, next) => {
  const credential = bearer(c.req.header("authorization"));
  const address = clientAddress(c);
  refuseIfBlocked(address);
  startTime(c, "auth", "credential checked (the request's database connection opened)");
  let caller: Caller;
  try {
    caller = await resolveCaller(c.get("pg").sql, credential, tokenSettings(c.env), c.req.header(ACCOUNT_HEADER));
  } catch (error) {
    // A credential checked and refused counts against its address (failed-credentials.ts).
    if (error instanceof ApiError && error.status === 401 && address !== null)
      throw (await countFailure(c, address)) ?? error;
    throw error;
  } finally {
    endTime(c, "auth");
  }
  c.set("caller", caller);
  c.get("log").debug("auth", { kind: caller.kind, account: caller.account?.id ?? null });
  return next();
};
