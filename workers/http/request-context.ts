import { createMiddleware } from "hono/factory";
import { createLogger, errorFields, type Logger, requestLogLevel } from "./log";

export type AppVariables = { requestId: string; log: Logger };
export type AppEnv = { Bindings: Env; Variables: AppVariables };

/**
 * Gives every request an id (the caller's `X-Request-Id` if sane) and logs one line when it ends,
 * at the level `requestLogLevel` (log.ts) gives.
 */
export const requestContext = createMiddleware<AppEnv>(async (c, next) => {
  const given = c.req.header("x-request-id");
  const requestId =
    given && /^[A-Za-z0-9._-]{8,64}$/.test(given) ? given : `req_${crypto.randomUUID().replaceAll("-", "")}`;
  const log = createLogger(c.env.LOG_LEVEL, { request_id: requestId });
  c.set("requestId", requestId);
  c.set("log", log);
  const started = Date.now();
  try {
    await next();
  } catch (error) {
    log.error("request.unhandled", errorFields(error));
    throw error;
  } finally {
    c.header("x-request-id", requestId);
    const durationMs = Date.now() - started;
    log[requestLogLevel(c.res.status, durationMs)]("request", {
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      duration_ms: durationMs,
    });
  }
});
