/**
 * The error Postgres raised for a statement, however it reached us: thrown as is by postgres.js, or
 * as the `cause` of the `DrizzleQueryError` drizzle-orm (0.45) wraps it in when drizzle ran the
 * statement. Its SQLSTATE (`code`: `23505`, or a code of ours such as `SQ001`) and `detail`; null
 * when the error came from neither.
 */
export function pgError(error: unknown): { code: string; detail: unknown } | null {
  type Raised = { code?: unknown; detail?: unknown; cause?: unknown } | null | undefined;
  const outer = error as Raised;
  const e = (typeof outer?.code === "string" ? outer : outer?.cause) as Raised;
  return typeof e?.code === "string" ? { code: e.code, detail: e.detail } : null;
}
