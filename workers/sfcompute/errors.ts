/**
 * One typed error for everything SF Compute can answer (reference §11). Three body shapes are seen
 * in the wild and all become an SfComputeError with status, code and message:
 *
 * - current: `{ "error": { "type", "message", "details": [{ field?, code, message }] } }`
 * - flat:    `{ "type", "message", "details" }`
 * - legacy:  `{ "object": "error", "code": "order.not_found", "message", "details": {} }`
 *
 * `code` is the error type of the first two forms and the legacy `<domain>.<reason>` code of the
 * third; `reason` is the most specific code available (a detail code when there is one). Transport
 * failures have status 0 and code `network_error` or `timeout`. Test with `isSfComputeError`, not
 * `instanceof`, across bundles.
 */
export class SfComputeError extends Error {
  readonly kind = "sfcompute_error" as const;

  constructor(
    /** HTTP status; 0 when no response arrived. */
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: {
      reason?: string;
      field?: string | null;
      details?: unknown;
      /** The server's advice on when to try again, ms. */
      retryAfterMs?: number | null;
      /** How many attempts were made before giving up. */
      attempts?: number;
      method?: string;
      path?: string;
      cause?: unknown;
    } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "SfComputeError";
  }

  get reason(): string {
    return this.extra.reason ?? this.code;
  }

  get attempts(): number {
    return this.extra.attempts ?? 1;
  }

  /** Worth retrying in principle: throttled, a server failure, or no answer at all. */
  get transient(): boolean {
    if (this.status === 0) return this.code === "network_error" || this.code === "timeout";
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export function isSfComputeError(error: unknown): error is SfComputeError {
  return typeof error === "object" && error !== null && (error as { kind?: unknown }).kind === "sfcompute_error";
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** Builds the error for a non-2xx answer from its status and body text (any of the three shapes, or none). */
export function errorFromResponse(
  status: number,
  bodyText: string,
  context: { method?: string; path?: string; retryAfterMs?: number | null } = {},
): SfComputeError {
  let body: unknown;
  try {
    body = bodyText.trim() === "" ? undefined : JSON.parse(bodyText);
  } catch {
    body = undefined;
  }
  const fallbackCode = status === 429 ? "rate_limited" : status >= 500 ? "api_error" : `http_${status}`;
  const fallbackMessage = bodyText.trim() ? bodyText.trim().slice(0, 500) : `HTTP ${status} with no body`;
  let code = fallbackCode;
  let message = fallbackMessage;
  let details: unknown;
  let reason: string | undefined;
  let field: string | null | undefined;
  if (isObject(body)) {
    const inner = isObject(body.error) ? body.error : body;
    if (body.object === "error" && str(body.code)) {
      // legacy
      code = str(body.code)!;
      message = str(body.message) ?? message;
      details = body.details;
      field = isObject(body.details) ? (str(body.details.field) ?? null) : undefined;
    } else if (str(inner.type) || str(inner.message)) {
      // current or flat
      code = str(inner.type) ?? code;
      message = str(inner.message) ?? message;
      details = inner.details;
      const first = Array.isArray(inner.details) && isObject(inner.details[0]) ? inner.details[0] : undefined;
      reason = first ? str(first.code) : undefined;
      field = first ? (str(first.field) ?? null) : undefined;
    } else if (typeof body.error === "string") {
      message = body.error;
    }
  }
  return new SfComputeError(status, code, message, {
    reason,
    field,
    details,
    retryAfterMs: context.retryAfterMs ?? null,
    method: context.method,
    path: context.path,
  });
}
