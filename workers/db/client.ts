/**
 * Postgres from a Worker or Durable Object: postgres.js over the Hyperdrive binding (Hyperdrive pools,
 * so each invocation opens one short-lived client), with drizzle on top.
 */
import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { parse as parseArray } from "postgres-array";

/**
 * Without drizzle's relational query API (`db.query.*`): given the schema, `drizzle()` derives the
 * relations of every table on each call, about 1 ms of the Worker's thread per request (a CPU
 * profile of the load test: 5 % of its time), and no code of ours uses that API.
 */
export type Db = PostgresJsDatabase;
export type Sql = postgres.Sql;

export interface DbBinding {
  HYPERDRIVE: Hyperdrive;
}

/**
 * Arrays read back as arrays. Without `fetch_types` (a round trip per connection) postgres.js hands
 * drizzle a `text[]` as its text form, and drizzle 0.45's own parser of that form drops every
 * backslash (`{"a\\nb"}` → "anb"): a command like `printf 'a\nb'` lost them. Parsed here,
 * drizzle takes the array as it is. Writing is unchanged (drizzle escapes correctly).
 */
const ARRAY_TYPES = {
  textArray: { to: 1009, from: [1009], serialize: (x: unknown) => x, parse: (x: string) => parseArray(x) },
  int4Array: { to: 1007, from: [1007], serialize: (x: unknown) => x, parse: (x: string) => parseArray(x, Number) },
} satisfies Record<string, postgres.PostgresType>;

export function openDb(env: DbBinding): { db: Db; sql: Sql; close: () => Promise<void> } {
  const sql = postgres(env.HYPERDRIVE.connectionString, {
    max: 1,
    fetch_types: false,
    prepare: true,
    connect_timeout: 10,
    onnotice: () => {},
    types: ARRAY_TYPES,
  });
  return { db: drizzle(sql), sql, close: () => sql.end({ timeout: 2 }) };
}

/** Run `fn` with a database client that is closed afterwards, whatever happens. */
export async function withDb<T>(env: DbBinding, fn: (db: Db, sql: Sql) => Promise<T>): Promise<T> {
  const { db, sql, close } = openDb(env);
  try {
    return await fn(db, sql);
  } finally {
    await close().catch(() => {});
  }
}
