/**
 * Building blocks of every v1 route: a router whose validation failures become the 400 envelope, the
 * middleware chain of a public route (authenticate → rate limit → permission → text Postgres can
 * store → JSON body → idempotency), response validation, and the error responses the OpenAPI document lists.
 */
import { OpenAPIHono, type RouteConfig, type z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { requireAccount, requireOperator, requireScope } from "../auth/caller";
import type { Scope } from "../auth/scopes";
import type { ApiEnv } from "../http/api-env";
import { authenticate } from "../http/authenticate";
import { jsonBody, noBody } from "../http/body";
import { idempotency } from "../http/idempotency";
import { rateLimit } from "../http/rate-limit";
import { refuseUnstorableBody, refuseUnstorableUrl } from "../http/text";
import { validationError } from "../http/validation";
import { ErrorEnvelope } from "./schemas";

export function createRouter() {
  const router = new OpenAPIHono<ApiEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        throw validationError(result.error, result.target, result.target === "query" ? repeatedQuery(c) : undefined);
      }
    },
  });
  // A route that declares no request body refuses one (noBody in place of jsonBody).
  const register = router.openapi.bind(router) as unknown as (route: RouteConfig, ...rest: unknown[]) => unknown;
  router.openapi = ((route: RouteConfig, ...rest: unknown[]) => {
    const middleware = route.middleware;
    if (route.request?.body || !Array.isArray(middleware) || !middleware.includes(jsonBody)) {
      return register(route, ...rest);
    }
    return register({ ...route, middleware: middleware.map((m) => (m === jsonBody ? noBody : m)) }, ...rest);
  }) as unknown as typeof router.openapi;
  return router;
}

/** Query parameters given more than once, with their counts. */
function repeatedQuery(c: Context): Map<string, number> {
  const repeated = new Map<string, number>();
  for (const [key, values] of Object.entries(c.req.queries())) if (values.length > 1) repeated.set(key, values.length);
  return repeated;
}

export interface Access {
  /** The scope the route needs; omitted: any authenticated caller. */
  scope?: Scope;
  /** The route works inside one account (default true). */
  account?: boolean;
  /** Operator routes: admin of the operator account. */
  operator?: boolean;
}

/** The middleware of a public route. */
export function guard(access: Access = {}): MiddlewareHandler<ApiEnv>[] {
  const permission: MiddlewareHandler<ApiEnv> = async (c, next) => {
    const caller = c.get("caller");
    if (access.operator) requireOperator(caller);
    else if (access.account !== false) requireAccount(caller);
    if (access.scope) requireScope(caller, access.scope);
    return next();
  };
  return [authenticate, rateLimit, permission, refuseUnstorableUrl, jsonBody, refuseUnstorableBody, idempotency];
}

/** Validate a response body against its schema before it leaves (it also drops fields not in it). */
export function respond<S extends z.ZodType, Status extends ContentfulStatusCode>(
  c: Context<ApiEnv>,
  schema: S,
  body: z.input<S>,
  status: Status,
) {
  return c.json(schema.parse(body) as z.output<S>, status);
}

const envelope = (description: string) => ({
  description,
  content: { "application/json": { schema: ErrorEnvelope } },
});

/** Error responses for the OpenAPI document, by status. */
export const ERRORS = {
  400: envelope("Invalid request: the envelope's `details.fields` names each offending field."),
  401: envelope("Missing, expired or invalid access token or API key."),
  402: envelope(
    "Monthly spend cap reached (`spend_cap_exceeded`), or the account is on payment hold (`payment_required`): an invoice is unpaid past its grace period or uncollectible, and `details` name it (`invoice_id`, `month`, `amount_due_cents`, `currency`, `hosted_invoice_url`).",
  ),
  403: envelope("Missing scope or role, tier not allowed, or a quota reached."),
  404: envelope("No such resource in this account."),
  409: envelope("Conflict with the resource's state, or an idempotent request still running."),
  413: envelope("Request body too large."),
  415: envelope("Body is not JSON."),
  422: envelope("Idempotency-Key reused with a different request, or the request cannot be scheduled."),
  429: envelope(
    "Rate limited (`rate_limited`: see `Retry-After` and `RateLimit-*`), or, for `follow=true` on logs, the account already holds its limit of open log streams (`too_many_log_streams`).",
  ),
  503: envelope(
    "A part the request needs did not answer: the region's scheduler (`scheduler_unavailable`; retry after `Retry-After`), or, for a workload with secret environment values, the key that seals them (`secrets_unavailable`).",
  ),
} as const;

type ErrorStatus = keyof typeof ERRORS;
export function errors(...statuses: ErrorStatus[]) {
  const common: ErrorStatus[] = [400, 401, 403, 429];
  const out: Partial<Record<ErrorStatus, (typeof ERRORS)[ErrorStatus]>> = {};
  for (const s of [...common, ...statuses]) out[s] = ERRORS[s];
  return out;
}

export const BEARER = [{ bearerAuth: [] }];
export const NODE_TOKEN = [{ nodeToken: [] }];
