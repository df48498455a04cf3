/** Structured JSON logs: one line per event, always with the request id when there is one. */
export type LogLevel = "debug" | "info" | "warn" | "error";
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function createLogger(level: string | undefined, base: Record<string, unknown> = {}): Logger {
  const min = ORDER[(level as LogLevel) ?? "info"] ?? ORDER.info;
  const emit = (lvl: LogLevel, event: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] < min) return;
    const line = JSON.stringify({ ts: new Date().toISOString(), level: lvl, event, ...base, ...fields });
    if (lvl === "error") console.error(line);
    else if (lvl === "warn") console.warn(line);
    else console.log(line);
  };
  return {
    debug: (e, f) => emit("debug", e, f),
    info: (e, f) => emit("info", e, f),
    warn: (e, f) => emit("warn", e, f),
    error: (e, f) => emit("error", e, f),
    child: (fields) => createLogger(level, { ...base, ...fields }),
  };
}

/** A request at least this slow is logged at `info` whatever its status. */
export const SLOW_REQUEST_MS = 1_000;

/**
 * The level of a request's line: `info` for a refused or failed request (status ≥ 400) and a slow
 * one; `debug` for the rest. Cloudflare's invocation logs (`[observability]`) already record every
 * request with its method, URL, status and time, so a line of ours for each successful one would
 * double the log volume (billed per line) without telling more; `LOG_LEVEL = "debug"` shows them.
 */
export function requestLogLevel(status: number, durationMs: number): "info" | "debug" {
  return status >= 400 || durationMs >= SLOW_REQUEST_MS ? "info" : "debug";
}

export function errorFields(error: unknown): Record<string, unknown> {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return {
      error: error.message,
      error_name: error.name,
      ...(cause instanceof Error ? { cause: cause.message } : {}),
    };
  }
  return { error: String(error) };
}
