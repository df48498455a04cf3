/**
 * Request bodies: a size cap (413), JSON only (415), parsed once so malformed JSON is a 400 that says
 * where it broke, and nested at most `MAX_BODY_DEPTH` deep. The text stays cached on the request, so
 * the route's zod validator and the idempotency hash read the same bytes.
 */
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { MAX_REQUEST_BODY_BYTES } from "../../core/schemas/limits";
import { ApiError } from "./errors";

/** Shared with the node agent, which sizes its log and event batches under it. */
export const MAX_BODY_BYTES = MAX_REQUEST_BODY_BYTES;

export const limitBody: MiddlewareHandler = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: () => {
    throw new ApiError(413, "payload_too_large", `request body exceeds ${MAX_BODY_BYTES} bytes`, {
      max_bytes: MAX_BODY_BYTES,
    });
  },
});

/**
 * Arrays and objects inside one another, at most. `JSON.parse` takes any depth, but what walks the
 * parsed value after it (the idempotency hash's canonical JSON, the text check, validators) recurses:
 * some thousands of levels, a few kilobytes of `[`, overflow the stack (a 500).
 */
export const MAX_BODY_DEPTH = 64;

/** Whether a JSON text nests arrays and objects deeper than `max`: one pass, no recursion. */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "[" || ch === "{") {
      if (++depth > max) return true;
    } else if (ch === "]" || ch === "}") depth--;
  }
  return false;
}

/**
 * The JSON types the routes' own body validators take (the media-type gate of @hono/zod-openapi):
 * `application/json` or `application/<x>+json`, each parameter after a `;` with no space before it.
 * Checked here too, so a body refused for its type is refused the same way on every route.
 */
const JSON_TYPE = /^application\/([a-z.-]+\+)?json(;\s*[a-zA-Z0-9-]+=([^;]+))*$/i;
const JSON_ISH = /^\s*application\/([^;\s]*\+)?json\b/i;

export function unsupportedMediaType(contentType: string | undefined): ApiError {
  const message =
    contentType && JSON_ISH.test(contentType)
      ? `Content-Type "${contentType}" is not written as this API reads it: send "application/json", parameters after a ";" with no space before it (e.g. "application/json; charset=utf-8")`
      : "send the body as JSON with Content-Type: application/json";
  return new ApiError(415, "unsupported_media_type", message, { content_type: contentType || null });
}

/** For methods with a body: a non-empty body must be JSON and must parse. */
export const jsonBody: MiddlewareHandler = async (c, next) => {
  if (c.req.method === "GET" || c.req.method === "HEAD" || c.req.method === "DELETE") return next();
  const text = await c.req.text();
  if (text.trim().length === 0) return next();
  const type = c.req.header("content-type") ?? "";
  if (!JSON_TYPE.test(type)) throw unsupportedMediaType(type);
  try {
    JSON.parse(text);
  } catch (error) {
    throw new ApiError(400, "invalid_json", `request body is not valid JSON: ${(error as Error).message}`);
  }
  if (nestsDeeperThan(text, MAX_BODY_DEPTH)) {
    throw new ApiError(400, "invalid_request", `request body nests arrays and objects deeper than ${MAX_BODY_DEPTH}`, {
      location: "body",
      max_depth: MAX_BODY_DEPTH,
      fields: [{ field: "body", message: `nested at most ${MAX_BODY_DEPTH} deep`, code: "too_deep" }],
    });
  }
  return next();
};

/**
 * In place of `jsonBody` on a route that declares no request body: a body (other than an empty one
 * or `{}`) is refused, not ignored, since whatever it asked for would not happen.
 */
export const noBody: MiddlewareHandler = async (c, next) => {
  if (c.req.method === "GET" || c.req.method === "HEAD") return next();
  const text = (await c.req.text()).trim();
  if (text === "" || /^\{\s*\}$/.test(text)) return next();
  throw new ApiError(400, "invalid_request", `${c.req.method} ${c.req.path} takes no request body; send none`, {
    location: "body",
    fields: [{ field: "body", message: "this route takes no body", code: "unexpected_body" }],
  });
};
