/**
 * Text Postgres cannot store, refused at the edge as bad input: a NUL character (neither `text` nor
 * `jsonb` holds one) and, in a JSON body, a lone UTF-16 surrogate (`"\ud800"` parses, but `jsonb`
 * refuses it). Without this such a value passed the schemas (a `command` item, an env value, a
 * label, a key's name, a `?label=` filter, an id in the path) and failed in the database: a 500.
 * One check at the edge (the URL before anything reads it, the body where it is parsed) instead of
 * a refinement on every string field of every schema.
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "./errors";

/** What is wrong with a string, or null. */
function flaw(value: string): string | null {
  if (value.includes("\0")) return "must not contain a NUL character (\\u0000)";
  if (!value.isWellFormed()) return "must not contain a lone UTF-16 surrogate";
  return null;
}

type FieldIssue = { field: string; message: string; code: "invalid_text" };

/** The first string (key or value) in a parsed JSON value that Postgres could not store. */
function firstFlaw(value: unknown, field: string): FieldIssue | null {
  if (typeof value === "string") {
    const message = flaw(value);
    return message ? { field: field || "(body)", message, code: "invalid_text" } : null;
  }
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const found = firstFlaw(item, `${field}[${i}]`);
      if (found) return found;
    }
    return null;
  }
  if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      const name = field ? `${field}.${key}` : key;
      const message = flaw(key);
      if (message) return { field: name, message: `a key ${message}`, code: "invalid_text" };
      const found = firstFlaw(item, name);
      if (found) return found;
    }
  }
  return null;
}

function refuse(location: string, issue: FieldIssue): never {
  throw new ApiError(400, "invalid_request", `invalid ${location}: ${issue.field}: ${issue.message}`, {
    location,
    fields: [issue],
  });
}

/**
 * Refuses a JSON body holding text Postgres cannot store (400 `invalid_request`, the field named).
 * After `jsonBody`, which has read (Hono keeps it for the route) and parsed it: parsed again only
 * when it has a `\u` escape, the only way a NUL or a lone surrogate gets into parsed JSON.
 */
export const refuseUnstorableBody: MiddlewareHandler = async (c, next) => {
  if (c.req.method === "GET" || c.req.method === "HEAD" || c.req.raw.body === null) return next();
  const text = await c.req.text();
  if (!text.includes("\\u")) return next();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return next(); // not JSON: jsonBody and the route answer that
  }
  const issue = firstFlaw(parsed, "");
  if (issue) refuse("body", issue);
  return next();
};

/** Refuses a request whose path or query holds text Postgres cannot store (`%00`, say). */
export const refuseUnstorableUrl: MiddlewareHandler = async (c, next) => {
  const path = flaw(c.req.path);
  if (path) refuse("path", { field: "path", message: path, code: "invalid_text" });
  for (const [name, value] of new URL(c.req.url).searchParams) {
    const message = flaw(name) ?? flaw(value);
    if (message) refuse("query", { field: name.replaceAll("\0", "\\u0000"), message, code: "invalid_text" });
  }
  return next();
};
