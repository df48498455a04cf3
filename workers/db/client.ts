/**
 * Postgres from a Worker or Durable Object: postgres.js over the Hyperdrive binding (Hyperdrive pools,
 * so each invocation opens one short-lived client), with drizzle on top.
 */
import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres from "postgres";

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

export function openDb(env: DbBinding): { db: Db; sql: Sql; close: () => Promise<void> } {
  const sql = postgres(env.HYPERDRIVE.connectionString, {
    max: 1,
    fetch_types: false,
    prepare: true,
    connect_timeout: 10,
    onnotice: () => {},
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
