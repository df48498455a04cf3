/**
 * The migrations runner. Applies `migrations/shim/auth_shim.sql` where no Supabase is present, then
 * every migration of drizzle-kit's journal in order, each in its own transaction, recording what it
 * applied (name and checksum) in `scalar_meta.schema_migrations`. Safe to run again: applied
 * migrations are skipped, and a changed applied file is reported, not re-run.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import postgres from "postgres";

export const MIGRATIONS_DIR = resolve(import.meta.dirname, "../../migrations");

interface JournalEntry {
  idx: number;
  tag: string;
}

export interface MigrationResult {
  applied: string[];
  skipped: string[];
  shim: "applied" | "skipped: Supabase present";
}

export function readJournal(dir = MIGRATIONS_DIR): JournalEntry[] {
  const journal = JSON.parse(readFileSync(join(dir, "meta/_journal.json"), "utf8")) as { entries: JournalEntry[] };
  return [...journal.entries].sort((a, b) => a.idx - b.idx);
}

function statements(sqlText: string): string[] {
  return sqlText
    .split("--> statement-breakpoint")
    .map((s) => s.trim())
    .filter((s) => s.replace(/--.*$/gm, "").trim().length > 0);
}

export async function migrate(
  databaseUrl: string,
  opts: { dir?: string; log?: (line: string) => void } = {},
): Promise<MigrationResult> {
  const dir = opts.dir ?? MIGRATIONS_DIR;
  const log = opts.log ?? (() => {});
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    // One runner at a time; a second waits here rather than applying the same files twice.
    await sql`select pg_advisory_lock(7245190331)`;
    const [supabase] = await sql`select 1 from pg_roles where rolname = 'supabase_auth_admin'`;
    let shim: MigrationResult["shim"] = "skipped: Supabase present";
    if (!supabase) {
      await sql.unsafe(readFileSync(join(dir, "shim/auth_shim.sql"), "utf8"));
      shim = "applied";
    }
    await sql`create schema if not exists scalar_meta`;
    await sql`create table if not exists scalar_meta.schema_migrations (
      name text primary key, checksum text not null, applied_at timestamptz not null default now())`;
    const done = new Map<string, string>();
    for (const row of await sql<
      { name: string; checksum: string }[]
    >`select name, checksum from scalar_meta.schema_migrations`) {
      done.set(row.name, row.checksum);
    }
    const result: MigrationResult = { applied: [], skipped: [], shim };
    for (const entry of readJournal(dir)) {
      const text = readFileSync(join(dir, `${entry.tag}.sql`), "utf8");
      const checksum = createHash("sha256").update(text).digest("hex");
      const previous = done.get(entry.tag);
      if (previous) {
        if (previous !== checksum) log(`warning: ${entry.tag} changed after it was applied; not re-run`);
        result.skipped.push(entry.tag);
        continue;
      }
      await sql.begin(async (tx) => {
        for (const statement of statements(text)) await tx.unsafe(statement);
        await tx`insert into scalar_meta.schema_migrations (name, checksum) values (${entry.tag}, ${checksum})`;
      });
      log(`applied ${entry.tag}`);
      result.applied.push(entry.tag);
    }
    return result;
  } finally {
    await sql`select pg_advisory_unlock(7245190331)`.catch(() => {});
    await sql.end({ timeout: 5 });
  }
}
