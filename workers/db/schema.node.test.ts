/**
 * The database protects itself: constraints, the auth trigger, row-level security, the audit
 * trigger and the activity view, checked against a real (embedded) Postgres 17.
 */
import { randomUUID } from "node:crypto";
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../tools/db/migrate";
import { createTestDatabase, sqlState, type TestDatabase, withDatabase } from "../../tools/test/database";

let db: TestDatabase;
let sql: postgres.Sql;

beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => {
  await db?.drop();
});

async function signUp(email: string): Promise<{ userId: string; accountId: string }> {
  const userId = randomUUID();
  await sql`insert into auth.users (id, email, aud, role) values (${userId}, ${email}, 'authenticated', 'authenticated')`;
  const [m] = await sql<{ account_id: string }[]>`select account_id from memberships where user_id = ${userId}`;
  return { userId, accountId: m!.account_id };
}

async function insertJob(accountId: string, overrides: Record<string, unknown> = {}): Promise<string> {
  const row = {
    account_id: accountId,
    region: "us-west-1",
    tier: "flex",
    image: "127.0.0.1:5000/test/busybox:1",
    gpu_count: 1,
    cpu_milli: 1000,
    memory_mib: 1024,
    max_runtime_s: 3600,
    ...overrides,
  };
  const [job] = await sql<{ id: string }[]>`insert into jobs ${sql(row)} returning id`;
  return job!.id;
}

async function insertNode(id: string): Promise<void> {
  await sql`insert into nodes (id, region, zone, gpu_model, gpu_count, cpu_milli, memory_mib, state)
            values (${id}, 'us-west-1', 'hayesvalley', 'H100', 8, 64000, 512000, 'ready')`;
}

describe("tables and constraints", () => {
  it("has every table of the plan", async () => {
    const rows = await sql<{ table_name: string }[]>`
      select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'`;
    const names = rows.map((r) => r.table_name);
    for (const t of [
      "users",
      "api_keys",
      "jobs",
      "blocks",
      "nodes",
      "gpu_assignments",
      "job_runs",
      "usage_events",
      "invoices",
      "accounts",
      "memberships",
      "audit_log",
    ]) {
      expect(names).toContain(t);
    }
  });

  it("refuses a second active assignment of one GPU index of one node, and allows it once released", async () => {
    const { accountId } = await signUp(`gpu-${randomUUID()}@example.com`);
    const nodeId = `node-${randomUUID()}`;
    await insertNode(nodeId);
    const jobA = await insertJob(accountId);
    const jobB = await insertJob(accountId);
    for (const [runId, jobId] of [
      [`pl-a-${jobA}`, jobA],
      [`pl-b-${jobB}`, jobB],
    ] as const) {
      await sql`insert into job_runs (id, job_id, account_id, attempt, node_id, status, gpu_count, placed_at)
                values (${runId}, ${jobId}, ${accountId}, 1, ${nodeId}, 'placed', 1, now())`;
    }
    await sql`insert into gpu_assignments (job_run_id, node_id, gpu_index, assigned_at) values (${`pl-a-${jobA}`}, ${nodeId}, 3, now())`;
    expect(
      await sqlState(
        sql`insert into gpu_assignments (job_run_id, node_id, gpu_index, assigned_at) values (${`pl-b-${jobB}`}, ${nodeId}, 3, now())`,
      ),
    ).toBe("23505"); // unique_violation
    await sql`update gpu_assignments set released_at = now() where job_run_id = ${`pl-a-${jobA}`}`;
    await sql`insert into gpu_assignments (job_run_id, node_id, gpu_index, assigned_at) values (${`pl-b-${jobB}`}, ${nodeId}, 3, now())`;
  });

  it("refuses negative money, unknown statuses and impossible GPU counts", async () => {
    const { accountId } = await signUp(`money-${randomUUID()}@example.com`);
    expect(
      await sqlState(
        sql`insert into invoices (account_id, period_start, period_end, subtotal_cents, total_cents)
            values (${accountId}, now(), now() + interval '1 month', -1, 0)`,
      ),
    ).toBe("23514"); // check_violation
    expect(
      await sqlState(
        sql`insert into blocks (region, zone, instance_type, gpu_model, node_count, start_at, end_at, price_cents)
            values ('us-west-1', 'hayesvalley', 'h100v', 'H100', 1, now(), now() + interval '1 hour', -500)`,
      ),
    ).toBe("23514");
    expect(await sqlState(insertJob(accountId, { status: "exploded" }))).toBe("23514");
    expect(await sqlState(insertJob(accountId, { tier: "turbo" }))).toBe("23514");
    expect(await sqlState(insertJob(accountId, { gpu_count: 0 }))).toBe("23514");
    expect(await sqlState(insertJob(accountId, { gpu_count: 9 }))).toBe("23514");
    expect(await sqlState(insertJob(accountId, { gpu_count: 16 }))).toBe("no error");
    expect(await sqlState(insertJob(accountId, { gpu_models: ["H100", "TPUv5"] }))).toBe("23514");
    expect(
      await sqlState(
        sql`insert into memberships (account_id, user_id, role) values (${accountId}, ${randomUUID()}, 'owner')`,
      ),
    ).toBe("23503"); // foreign_key_violation
    expect(
      await sqlState(
        sql`insert into api_keys (account_id, name, prefix, secret_hash, scopes)
            values (${accountId}, 'k', ${`sk_${randomUUID()}`}, ${randomUUID()}, array['jobs:read', 'root'])`,
      ),
    ).toBe("23514");
  });

  it("stores instants with their time zone", async () => {
    const rows = await sql<{ n: number }[]>`
      select count(*)::int as n from information_schema.columns
       where table_schema = 'public' and data_type = 'timestamp without time zone'`;
    expect(rows[0]!.n).toBe(0);
  });
});

describe("Supabase auth", () => {
  it("creates the public.users row (and an owned account) when an auth.users row appears, and removes it on delete", async () => {
    const email = `new-${randomUUID()}@example.com`;
    const { userId, accountId } = await signUp(email);
    const [user] = await sql`select email from users where id = ${userId}`;
    expect(user?.email).toBe(email);
    const [membership] =
      await sql`select role from memberships where user_id = ${userId} and account_id = ${accountId}`;
    expect(membership?.role).toBe("owner");
    await sql`delete from auth.users where id = ${userId}`;
    expect(await sql`select 1 from users where id = ${userId}`).toHaveLength(0);
  });

  it("shows a connection acting as `authenticated` only its account's jobs", async () => {
    const a = await signUp(`a-${randomUUID()}@example.com`);
    const b = await signUp(`b-${randomUUID()}@example.com`);
    const jobA = await insertJob(a.accountId);
    const jobB = await insertJob(b.accountId);
    const asUser = (userId: string) =>
      sql.begin(async (tx) => {
        await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: userId, role: "authenticated" })}, true),
                        set_config('role', 'authenticated', true)`;
        const jobs = await tx<{ id: string }[]>`select id from jobs`;
        const accounts = await tx<{ id: string }[]>`select id from accounts`;
        const [who] = await tx<{ uid: string; role: string }[]>`select auth.uid() as uid, current_user as role`;
        return { jobs: jobs.map((j) => j.id), accounts: accounts.map((x) => x.id), who };
      });
    const seenByA = await asUser(a.userId);
    expect(seenByA.jobs).toEqual([jobA]);
    expect(seenByA.accounts).toEqual([a.accountId]);
    expect(seenByA.who).toEqual({ uid: a.userId, role: "authenticated" });
    const seenByB = await asUser(b.userId);
    expect(seenByB.jobs).toEqual([jobB]);

    // authenticated may read, not write; anon may not even read.
    const writeAttempt = sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: a.userId, role: "authenticated" })}, true),
                      set_config('role', 'authenticated', true)`;
      await tx`update jobs set priority = 5 where id = ${jobA}`;
    });
    expect(await sqlState(writeAttempt)).toBe("42501"); // insufficient_privilege
    const anonRead = sql.begin(async (tx) => {
      await tx`select set_config('role', 'anon', true)`;
      await tx`select id from jobs`;
    });
    expect(await sqlState(anonRead)).toBe("42501");
    // The secret hash of an API key is never readable by a user connection.
    const hashRead = sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: a.userId, role: "authenticated" })}, true),
                      set_config('role', 'authenticated', true)`;
      await tx`select secret_hash from api_keys`;
    });
    expect(await sqlState(hashRead)).toBe("42501");
  });
});

describe("audit and activity", () => {
  it("writes an audit row on every change of a job's status, and not on other updates", async () => {
    const { accountId } = await signUp(`audit-${randomUUID()}@example.com`);
    const jobId = await insertJob(accountId);
    await sql`update jobs set status = 'placed' where id = ${jobId}`;
    await sql`update jobs set priority = 7 where id = ${jobId}`;
    await sql`update jobs set status = 'running' where id = ${jobId}`;
    const rows = await sql<{ action: string; data: { from?: string; to?: string } }[]>`
      select action, data from audit_log where target_type = 'job' and target_id = ${jobId} order by id`;
    expect(rows.map((r) => [r.action, r.data.from ?? null, r.data.to ?? null])).toEqual([
      ["job.created", null, null],
      ["job.status_changed", "queued", "placed"],
      ["job.status_changed", "placed", "running"],
    ]);
  });

  it("sums job counts and GPU-seconds per account, day and status", async () => {
    const { accountId } = await signUp(`activity-${randomUUID()}@example.com`);
    const nodeId = `node-${randomUUID()}`;
    await insertNode(nodeId);
    const done = await insertJob(accountId, { status: "succeeded", gpu_count: 2 });
    await insertJob(accountId, { status: "queued" });
    await sql`insert into job_runs (id, job_id, account_id, attempt, node_id, status, gpu_count, placed_at, started_at, finished_at)
              values (${`pl-${done}`}, ${done}, ${accountId}, 1, ${nodeId}, 'succeeded', 2,
                      now() - interval '100 seconds', now() - interval '90 seconds', now() - interval '30 seconds')`;
    const rows = await sql<{ status: string; job_count: string; gpu_seconds: string }[]>`
      select status, job_count, gpu_seconds from job_activity_daily where account_id = ${accountId} order by status`;
    // 2 GPUs × 60 s = 120 GPU-seconds for the succeeded job; none for the queued one.
    expect(rows.map((r) => [r.status, Number(r.job_count), Number(r.gpu_seconds)])).toEqual([
      ["queued", 1, 0],
      ["succeeded", 1, 120],
    ]);
  });
});

describe("migrations runner", () => {
  it("applies everything to an empty database once, records it, and applies nothing the second time", async () => {
    const name = `empty_${randomUUID().slice(0, 8)}`;
    await sql.unsafe(`create database "${name}"`);
    const url = withDatabase(db.url, name);
    try {
      const first = await migrate(url);
      expect(first.applied.length).toBeGreaterThan(0);
      expect(first.shim).toBe("applied");
      const second = await migrate(url);
      expect(second.applied).toEqual([]);
      expect(second.skipped).toEqual(first.applied);
    } finally {
      await sql.unsafe(`drop database if exists "${name}" with (force)`);
    }
  });
});
