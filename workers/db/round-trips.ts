/**
 * Fewer round trips to Postgres. Locally every round trip crosses wrangler's Hyperdrive proxy (20–40 ms
 * under load; see docs/performance.md), and a Worker's connection is new for each request, so
 * postgres.js describes every statement that has parameters before running it (two round trips), and
 * `sql.begin` waits for `BEGIN` alone before the first statement. Two remedies:
 * - `literal` / `inlineRow`: values written into the statement, so it has no parameters (one round trip);
 * - `pipelinedTransaction`: `BEGIN` and the first statement sent together with what follows.
 */
import { getTableColumns, is, SQL, sql, type Table } from "drizzle-orm";
import type postgres from "postgres";

type Sql = postgres.Sql;

/**
 * A string as a SQL literal. The `E'…'` form with backslashes and quotes doubled reads the same
 * whatever `standard_conforming_strings` says. NUL cannot be in a Postgres string: refused.
 */
export function literal(value: string): string {
  if (value.includes("\0")) throw new Error("a SQL literal cannot hold a NUL character");
  return `E'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

/**
 * A row for drizzle's `insert(table).values(…)` with every value written as a typed literal
 * (`E'…'::jsonb`, `5::integer`, `null`) instead of a parameter. Each value goes through its column's
 * own driver mapping first (JSON text for jsonb, `{…}` for arrays, ISO text for timestamps), so the
 * database stores what drizzle would have bound. SQL values are kept as they are.
 */
export function inlineRow<T extends Table>(
  table: T,
  row: { [K in keyof T["$inferInsert"]]: T["$inferInsert"][K] | SQL },
): Record<keyof T["$inferInsert"], SQL> {
  const columns = getTableColumns(table) as Record<
    string,
    { mapToDriverValue(v: unknown): unknown; getSQLType(): string }
  >;
  const out: Record<string, SQL> = {};
  for (const [key, value] of Object.entries(row as Record<string, unknown>)) {
    if (value === undefined) continue;
    if (is(value, SQL)) {
      out[key] = value;
      continue;
    }
    const column = columns[key];
    if (!column) throw new Error(`inlineRow: no column ${key}`);
    out[key] = sql.raw(`${sqlValue(value === null ? null : column.mapToDriverValue(value))}::${column.getSQLType()}`);
  }
  return out as Record<keyof T["$inferInsert"], SQL>;
}

function sqlValue(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error(`inlineRow: not a finite number: ${v}`);
    return String(v);
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "string") return literal(v);
  if (v instanceof Date) return literal(v.toISOString());
  throw new Error(`inlineRow: cannot write a ${typeof v} as a literal`);
}

/**
 * Runs `fn` in a transaction on `sql`, a client with a single connection (`openDb`'s `max: 1`), so
 * that every statement `fn` sends through it (or through the drizzle instance over it) goes to that
 * connection after `BEGIN`. `BEGIN` and `first` (a statement without parameters, e.g. a row lock) are
 * sent at once and `fn`'s first statement is pipelined behind them: one round trip where
 * `sql.begin` + a lock take two before `fn` starts. Commits when `fn` resolves; rolls back and
 * rethrows when it throws (or when `BEGIN`/`first` fail: their error is the one thrown). Nothing else
 * may use the client meanwhile: it would run inside this transaction.
 */
export async function pipelinedTransaction<T>(sql: Sql, first: string, fn: () => Promise<T>): Promise<T> {
  const opened = Promise.all([sql.unsafe("begin").execute(), sql.unsafe(first).execute()]);
  // Both settle before the transaction ends, so no statement of `fn` can run after its COMMIT or ROLLBACK.
  const [begun, done] = await Promise.allSettled([opened, fn()]);
  if (begun.status === "fulfilled" && done.status === "fulfilled") {
    await sql.unsafe("commit");
    return done.value;
  }
  await sql.unsafe("rollback").catch(() => {});
  throw begun.status === "rejected" ? begun.reason : (done as PromiseRejectedResult).reason;
}

/**
 * `BEGIN`, `lock`, `statement` and `COMMIT` sent at once on `sql` (a single-connection client, as
 * for `pipelinedTransaction`): one round trip, and a lock taken by `lock` is held only while the
 * server runs `statement` and commits, never across a round trip to the Worker. Both statements
 * must be without parameters (a statement with parameters is described first on a new connection,
 * which would break the pipeline). Whatever must make the transaction fail has to fail inside
 * `statement` (e.g. a function that raises): a failed statement makes Postgres answer the `COMMIT`
 * with a `ROLLBACK`, and that statement's error is thrown. Returns `statement`'s rows as arrays of
 * column values in the driver's form (see `mapColumns`).
 */
export async function pipelinedWrite(sql: Sql, lock: string, statement: string): Promise<unknown[][]> {
  const sent = [
    sql.unsafe("begin").execute(),
    sql.unsafe(lock).execute(),
    sql.unsafe(statement).values().execute(),
    sql.unsafe("commit").execute(),
  ];
  const settled = await Promise.allSettled(sent);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    // A failed BEGIN or COMMIT leaves no transaction open; anything else was rolled back by the COMMIT.
    await sql.unsafe("rollback").catch(() => {});
    throw failed.reason;
  }
  const committed = (settled[3] as PromiseFulfilledResult<{ command?: string }>).value;
  if (committed.command !== "COMMIT") throw new Error(`the transaction ended in ${committed.command ?? "nothing"}`);
  return (settled[2] as PromiseFulfilledResult<unknown[][]>).value;
}

/**
 * Rows of a statement run with `values()` (arrays in the order of `columns`) as drizzle would have
 * returned them for a `returning(columns)`: each value through its column's own driver mapping.
 */
export function mapColumns<T extends Record<string, unknown>>(
  columns: Record<string, { mapFromDriverValue(v: unknown): unknown }>,
  rows: readonly unknown[][],
): T[] {
  const entries = Object.entries(columns);
  return rows.map((row) => {
    const out: Record<string, unknown> = {};
    entries.forEach(([key, column], i) => {
      const v = row[i];
      out[key] = v === null || v === undefined ? null : column.mapFromDriverValue(v);
    });
    return out as T;
  });
}
