/**
 * The one typed error of the HTTP edge and the envelope every route answers with:
 * `{ "error": { "code", "message", "details"?, "request_id" } }`.
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export function errorBody(requestId: string, code: string, message: string, details?: unknown) {
  return { error: { code, message, ...(details === undefined ? {} : { details }), request_id: requestId } };
}

export function errorResponse(c: Context, err: ApiError): Response {
  const body = errorBody(c.get("requestId") ?? "unknown", err.code, err.message, err.details);
  return c.json(body, err.status, err.headers);
}
