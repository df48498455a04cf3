/** Who is calling: resolves the bearer credential of a public route into `c.var.caller`. */
import type { MiddlewareHandler } from "hono";
import { endTime, startTime } from "hono/timing";
import { ACCOUNT_HEADER, bearer, resolveCaller } from "../auth/caller";
import { tokenSettings } from "../auth/supabase-token";
import type { ApiEnv } from "./api-env";

export const authenticate: MiddlewareHandler<ApiEnv> = async (c, next) => {
  const credential = bearer(c.req.header("authorization"));
  startTime(c, "auth", "credential checked (the request's database connection opened)");
  const caller = await resolveCaller(c.get("pg").sql, credential, tokenSettings(c.env), c.req.header(ACCOUNT_HEADER));
  endTime(c, "auth");
  c.set("caller", caller);
  c.get("log").debug("auth", { kind: caller.kind, account: caller.account?.id ?? null });
  return next();
};
