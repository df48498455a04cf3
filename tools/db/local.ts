/** Where the local stack keeps its state, and how scripts find the database. */
import { resolve } from "node:path";
import { DEFAULT_PG_PORT, type EmbeddedDb, isPortFree, PG_PASSWORD, PG_USER, startEmbeddedPostgres } from "./embedded";

export const ROOT = resolve(import.meta.dirname, "../..");
export const STATE_DIR = resolve(ROOT, ".scalar");
export const DEV_PG_DIR = resolve(STATE_DIR, "pg/dev");

export function devPgPort(): number {
  return Number(process.env.SCALAR_PG_PORT ?? DEFAULT_PG_PORT);
}

export function devDatabaseUrl(port = devPgPort()): string {
  return `postgres://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${port}/scalar`;
}

/**
 * `DATABASE_URL` if set; else the development embedded Postgres, reusing it when it already runs
 * (e.g. under `npm start`) and starting it otherwise (then `stop` stops it again).
 */
export async function openDevDatabase(log?: (line: string) => void): Promise<EmbeddedDb & { started: boolean }> {
  if (process.env.DATABASE_URL) {
    return { url: process.env.DATABASE_URL, port: 0, stop: async () => {}, started: false };
  }
  const port = devPgPort();
  if (!(await isPortFree(port))) {
    return { url: devDatabaseUrl(port), port, stop: async () => {}, started: false };
  }
  return { ...(await startEmbeddedPostgres({ dataDir: DEV_PG_DIR, port, log })), started: true };
}
