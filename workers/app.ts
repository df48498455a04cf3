/** The Hono application: middleware, the error envelope, and the routes. */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { createApi } from "./api";
import { withDb } from "./db/client";
import { allowedMethods } from "./http/allowed-methods";
import { unsupportedMediaType } from "./http/body";
import { ApiError, errorBody, errorResponse } from "./http/errors";
import { errorFields } from "./http/log";
import { type AppEnv, requestContext } from "./http/request-context";
import { regionScheduler, regionsOf } from "./regions";

export function createApp() {
  const app = new Hono<AppEnv>();
  // The bare route: registered before any middleware, so it touches nothing (no request context, no
  // database, no Durable Object, no auth). The load test measures the dev server's own cost with it.
  app.get("/ping", (c) => c.text("pong"));
  app.use("*", requestContext);

  app.onError((error, c) => {
    if (error instanceof ApiError) return errorResponse(c, error);
    if (error instanceof HTTPException && error.status === 400 && /malformed json/i.test(error.message)) {
      // The route's JSON validator found no JSON to read: a body it needs is missing (a body that
      // does not parse is refused earlier, by jsonBody, with where it broke).
      return errorResponse(c, new ApiError(400, "invalid_json", "this route needs a JSON body (an object)"));
    }
    if (error instanceof HTTPException && error.status === 415) {
      return errorResponse(c, unsupportedMediaType(c.req.header("content-type")));
    }
    if (error instanceof HTTPException) {
      return c.json(errorBody(c.get("requestId"), "http_error", error.message || "request failed"), error.status);
    }
    c.get("log")?.error("request.failed", errorFields(error));
    return c.json(
      errorBody(c.get("requestId") ?? "unknown", "internal", "internal error; quote the request id to support"),
      500,
    );
  });
  let allowed: ((path: string) => string[]) | undefined;
  app.notFound((c) => {
    // Built on first use, once every route below is registered.
    allowed ??= allowedMethods(app.routes);
    const methods = allowed(c.req.path);
    if (methods.length > 0) {
      c.header("Allow", methods.join(", "));
      return c.json(
        errorBody(
          c.get("requestId"),
          "method_not_allowed",
          `${c.req.path} does not take ${c.req.method}; it takes ${methods.join(", ")}`,
        ),
        405,
      );
    }
    return c.json(errorBody(c.get("requestId"), "not_found", `no route for ${c.req.method} ${c.req.path}`), 404);
  });

  /** Liveness and dependencies: Postgres through Hyperdrive, and each region's scheduler object. */
  app.get("/healthz", async (c) => {
    const started = Date.now();
    const database = await withDb(c.env, async (_db, sql) => {
      const [row] = await sql<{ version: string }[]>`select current_setting('server_version') as version`;
      return { reachable: true, server_version: row?.version ?? "unknown", latency_ms: Date.now() - started };
    }).catch((error: unknown) => ({ reachable: false, ...errorFields(error) }));
    const regions = await Promise.all(
      regionsOf(c.env).map(async (region) => {
        try {
          return { ok: true, ...(await regionScheduler(c.env, region).ping(region)) };
        } catch (error) {
          return { region, ok: false, ...errorFields(error) };
        }
      }),
    );
    const ok = database.reachable && regions.every((r) => r.ok);
    return c.json({ status: ok ? "ok" : "degraded", database, regions }, ok ? 200 : 503);
  });

  app.route("/", createApi());
  return app;
}
