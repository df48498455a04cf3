/** zod failures → a 400 in the envelope that names every offending field. */
import type { z } from "zod";
import { ApiError } from "./errors";

export interface FieldIssue {
  field: string;
  message: string;
  code: string;
}

/** `env[0].name`, `gpu_models[1]`; the body itself is `(body)`. */
export function fieldName(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || "(body)";
}

export function fieldIssues(error: z.ZodError): FieldIssue[] {
  const issues: FieldIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        issues.push({ field: fieldName([...issue.path, key]), message: "unknown field", code: "unknown_field" });
      }
      continue;
    }
    issues.push({ field: fieldName(issue.path), message: issue.message, code: issue.code });
  }
  return issues;
}

const WHERE: Record<string, string> = {
  json: "body",
  query: "query parameter",
  param: "path parameter",
  header: "header",
};

/**
 * `repeated`: query parameters given more than once, with their counts. An issue with one of those
 * says so (`?limit=1&limit=2` reached the schema as an array, and "expected number, received NaN"
 * would not tell why).
 */
export function validationError(error: z.ZodError, target: string, repeated?: Map<string, number>): ApiError {
  const issues = fieldIssues(error).map((issue) => {
    // Only where the parameter's type was wrong: one that takes repeats (label) fails otherwise.
    const times = /^invalid_(type|value)$/.test(issue.code) ? repeated?.get(issue.field.split(/[.[]/)[0]!) : undefined;
    return times ? { ...issue, message: `given ${times} times; takes one value`, code: "repeated" } : issue;
  });
  const summary = issues
    .slice(0, 5)
    .map((i) => `${i.field}: ${i.message}`)
    .join("; ");
  const where = WHERE[target] ?? target;
  return new ApiError(400, "invalid_request", `invalid ${where}: ${summary}${issues.length > 5 ? "; …" : ""}`, {
    location: target === "json" ? "body" : target,
    fields: issues,
  });
}
