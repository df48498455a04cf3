/**
 * Errors as SF Compute sends them. The simulator raises one SimError; the HTTP layer renders it in
 * the configured body shape (reference §11): the current `{error:{type,message,details}}`, the flat
 * `{type,message,details}` of some generated examples, or the legacy `{object:"error",code,message}`.
 */
export type ErrorType =
  | "api_error"
  | "invalid_request_error"
  | "authentication_error"
  | "idempotency_error"
  | "conflict"
  | "not_found"
  | "request_timed_out"
  | "forbidden"
  | "not_implemented"
  | "upgrade_required"
  | "payment_required"
  | "service_unavailable"
  | "unprocessable_entity"
  | "gone";

export type ErrorStyle = "current" | "flat" | "legacy";

export class SimError extends Error {
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    message: string,
    /** A legacy `<domain>.<reason>` code, e.g. `order.already_cancelled`, or a detail code. */
    readonly code?: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "SimError";
  }
}

export const invalid = (message: string, field?: string, code?: string) =>
  new SimError(400, "invalid_request_error", message, code ?? (field ? `invalid_${field}` : undefined), field);
export const notFound = (message: string, code?: string) => new SimError(404, "not_found", message, code);

export function errorBody(error: SimError, style: ErrorStyle): unknown {
  const details = error.code ? [{ field: error.field ?? null, code: error.code, message: error.message }] : [];
  switch (style) {
    case "current":
      return { error: { type: error.type, message: error.message, details } };
    case "flat":
      return { type: error.type, message: error.message, details };
    case "legacy":
      return {
        object: "error",
        code: error.code ?? error.type,
        message: error.message,
        details: error.field ? { field: error.field } : {},
      };
  }
}
