/**
 * Test databases. `npm test` migrates one template database; each test file that needs Postgres
 * gets its own copy (CREATE DATABASE … TEMPLATE), so files run in parallel without sharing rows.
 */
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { requirePart } from "./parts";

export const TEMPLATE_DB = "scalar_template";

export interface TestDatabase {
  url: string;
  name: string;
  sql: postgres.Sql;
  drop(): Promise<void>;
}

function adminUrl(): string {
  const url = process.env.SCALAR_TEST_PG_ADMIN_URL;
  requirePart("postgres", url, "SCALAR_TEST_PG_ADMIN_URL is set by `npm test` (tools/test/run.ts)");
  return url as string;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `t_${randomBytes(6).toString("hex")}`;
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database "${name}" template "${TEMPLATE_DB}"`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl(), name);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  return {
    url,
    name,
    sql,
    async drop() {
      await sql.end({ timeout: 2 });
      const a = postgres(adminUrl(), { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`drop database if exists "${name}" with (force)`);
      } finally {
        await a.end();
      }
    },
  };
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** SQLSTATE of a statement that should fail (postgres.js puts it on `code`), or "no error". */
export async function sqlState(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  }
  return "no error";
}
