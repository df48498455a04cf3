/** What the CLI can fail with, and the exit codes it promises (docs/cli.md lists them). */

export const EXIT = {
  ok: 0,
  /** The API refused, could not be reached, or a credential is missing. */
  error: 1,
  /** The command line itself is wrong. */
  usage: 2,
  /** `jobs run`: the job failed without an exit code of its own (image pull, lost node, runtime limit…). */
  jobFailed: 120,
  /** `jobs run`: the job was cancelled. */
  jobCancelled: 121,
  /** `jobs run`: the job was dead-lettered (attempts exhausted) without a non-zero exit code to report. */
  jobDeadLettered: 122,
  /** Ctrl-C while watching a job: the CLI stopped, the job did not. */
  interrupted: 130,
} as const;

/** A failure the user should read as one line; `exitCode` is what the process ends with. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.error,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT.usage);
    this.name = "UsageError";
  }
}

export interface FieldIssue {
  field: string;
  message?: string;
  code?: string;
}

/** The API's error envelope, `{ error: { code, message, details?, request_id } }`, as a CLI failure. */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly apiMessage: string,
    readonly details: unknown,
    readonly requestId: string | null,
  ) {
    super(apiErrorLine(code, apiMessage, details));
    this.name = "ApiError";
  }
}

/** `code: message (field a, b)`; the fields only when the message does not already name them. */
export function apiErrorLine(code: string, message: string, details: unknown): string {
  const fields = fieldsOf(details)
    .map((f) => f.field)
    .filter((f) => f && !message.includes(f));
  const suffix = fields.length > 0 ? ` (${fields.length === 1 ? "field" : "fields"} ${fields.join(", ")})` : "";
  return `${code}: ${message}${suffix}`;
}

function fieldsOf(details: unknown): FieldIssue[] {
  const fields = (details as { fields?: unknown } | null | undefined)?.fields;
  return Array.isArray(fields) ? fields.filter((f): f is FieldIssue => typeof f?.field === "string") : [];
}

/** Builds the error for a non-2xx answer from its parsed body (an envelope, or anything else). */
export function apiErrorFrom(status: number, body: unknown, requestId: string | null): ApiError {
  const envelope = (body as { error?: { code?: unknown; message?: unknown; details?: unknown; request_id?: unknown } })
    ?.error;
  if (envelope && typeof envelope.code === "string") {
    return new ApiError(
      status,
      envelope.code,
      typeof envelope.message === "string" ? envelope.message : `HTTP ${status}`,
      envelope.details,
      typeof envelope.request_id === "string" ? envelope.request_id : requestId,
    );
  }
  const text = typeof body === "string" ? body.trim().split("\n")[0]?.slice(0, 200) : "";
  return new ApiError(status, `http_${status}`, text || "the API answered without an error envelope", null, requestId);
}

/** The API could not be reached (retrying may help). */
export class NetworkError extends CliError {
  constructor(message: string) {
    super(message, EXIT.error);
    this.name = "NetworkError";
  }
}

/** A fetch that threw: name the URL that could not be reached and why. */
export function networkError(url: string, error: unknown): CliError {
  const cause = (error as { cause?: { code?: string; message?: string } })?.cause;
  const why =
    cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error)) ?? "unknown error";
  const local = /^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(url);
  return new NetworkError(
    `could not reach the Scalar API at ${url} (${why})${local ? "; is `npm start` running?" : ""}`,
  );
}

/** The one line printed for any failure. */
export function errorLine(error: unknown): string {
  if (error instanceof CliError) return `error: ${error.message}`;
  return `error: ${error instanceof Error ? error.message : String(error)}`;
}

export function exitCodeOf(error: unknown): number {
  return error instanceof CliError ? error.exitCode : EXIT.error;
}
