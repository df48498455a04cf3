/**
 * The API gateway's tables protect themselves too: secret environment values and idempotency
 * records are unreadable from a user connection, logs and endpoints are readable only by their
 * account, and the constraints refuse bad rows. Against a real (embedded) Postgres 17.
 */
import { randomUUID } from "node:crypto";
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type TestDatabase } from "../../tools/test/database";

let db: TestDatabase;
let sql: postgres.Sql;

beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => {
  await db?.drop();
});

async function signUp(): Promise<{ userId: string; accountId: string }> {
  const userId = randomUUID();
  await sql`insert into auth.users (id, email, aud, role) values (${userId}, ${`${userId}@example.test`}, 'authenticated', 'authenticated')`;
  const [m] = await sql<{ account_id: string }[]>`select account_id from memberships where user_id = ${userId}`;
  return { userId, accountId: m!.account_id };
}

/** Run `fn` as Supabase's `authenticated` role with the user's claims, as PostgREST would. */
function asUser<T>(userId: string, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  return sql.begin(async (tx) => {
    await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: userId, role: "authenticated" })}, true),
                    set_config('role', 'authenticated', true)`;
    return fn(tx);
  }) as Promise<T>;
}

async function job(accountId: string): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    insert into jobs (account_id, region, tier, image, gpu_count, cpu_milli, memory_mib, max_runtime_s, env)
    values (${accountId}, 'us-west-1', 'flex', 'busybox', 1, 1000, 1024, 60,
            ${sql.json([{ name: "TOKEN", value: "secret", secret: true }])})
    returning id`;
  return row!.id;
}

describe("API gateway tables under row-level security", () => {
  it("never lets a user connection read secret environment values or idempotency records", async () => {
    const a = await signUp();
    const jobId = await job(a.accountId);
    const visible = await asUser(a.userId, (tx) => tx<{ id: string; status: string }[]>`select id, status from jobs`);
    expect(visible).toEqual([{ id: jobId, status: "queued" }]);
    expect(await sqlState(asUser(a.userId, (tx) => tx`select env from jobs`))).toBe("42501");
    await sql`insert into endpoints (account_id, name, region, tier, image, gpu_count, cpu_milli, memory_mib,
                min_replicas, max_replicas, scale_down_delay_s, port, health_path)
              values (${a.accountId}, 'svc', 'us-west-1', 'flex', 'busybox', 1, 1000, 1024, 1, 1, 0, 80, '/')`;
    expect(await asUser(a.userId, (tx) => tx`select name from endpoints`)).toEqual([{ name: "svc" }]);
    expect(await sqlState(asUser(a.userId, (tx) => tx`select env from endpoints`))).toBe("42501");
    expect(await sqlState(asUser(a.userId, (tx) => tx`select * from idempotency_keys`))).toBe("42501");
    expect(await sqlState(asUser(a.userId, (tx) => tx`select * from job_submissions`))).toBe("42501");
    expect(await sqlState(asUser(a.userId, (tx) => tx`select * from rate_limit_overrides`))).toBe("42501");
  });

  it("shows a job's log lines only to its account, and only those from the run's own node", async () => {
    const a = await signUp();
    const b = await signUp();
    const jobId = await job(a.accountId);
    const nodeId = `node-${randomUUID().slice(0, 8)}`;
    await sql`insert into nodes (id, region, zone, gpu_model, gpu_count, cpu_milli, memory_mib)
              values (${nodeId}, 'us-west-1', 'z', 'H100', 8, 64000, 512000)`;
    await sql`insert into job_runs (id, job_id, account_id, attempt, node_id, status, gpu_count, placed_at)
              values ('pl-1', ${jobId}, ${a.accountId}, 1, ${nodeId}, 'running', 1, now())`;
    await sql`insert into job_logs (placement_id, node_id, seq, stream, at, line) values
              ('pl-1', ${nodeId}, 0, 'stdout', now(), 'ours'), ('pl-1', 'other-node', 1, 'stdout', now(), 'forged')`;
    expect(await asUser(a.userId, (tx) => tx`select line from job_logs`)).toEqual([{ line: "ours" }]);
    expect(await asUser(b.userId, (tx) => tx`select line from job_logs`)).toEqual([]);
    expect(await sqlState(asUser(a.userId, (tx) => tx`delete from job_logs`))).toBe("42501");
  });

  it("refuses bad rows", async () => {
    const a = await signUp();
    const endpoint = (over: Record<string, unknown>) =>
      sql`insert into endpoints ${sql({
        account_id: a.accountId,
        name: "ok",
        region: "us-west-1",
        tier: "flex",
        image: "busybox",
        gpu_count: 1,
        cpu_milli: 1000,
        memory_mib: 1024,
        min_replicas: 1,
        max_replicas: 1,
        scale_down_delay_s: 0,
        port: 80,
        health_path: "/",
        ...over,
      })}`;
    expect(await sqlState(endpoint({ min_replicas: 3, max_replicas: 2 }))).toBe("23514");
    expect(await sqlState(endpoint({ gpu_count: 9 }))).toBe("23514");
    expect(await sqlState(endpoint({ name: "Not OK" }))).toBe("23514");
    expect(await sqlState(endpoint({ tier: "turbo" }))).toBe("23514");
    await endpoint({ name: "one" });
    // One active endpoint per name and account; a deleted one frees the name.
    expect(await sqlState(endpoint({ name: "one" }))).toBe("23505");
    await sql`update endpoints set status = 'deleted' where name = 'one' and account_id = ${a.accountId}`;
    await endpoint({ name: "one" });
    expect(
      await sqlState(sql`insert into job_logs (placement_id, node_id, seq, stream, at, line)
                         values ('p', 'n', -1, 'stdout', now(), 'x')`),
    ).toBe("23514");
    expect(
      await sqlState(sql`insert into idempotency_keys (account_id, key, method, path, request_hash, state, locked_until, expires_at)
                         values (${a.accountId}, 'k', 'POST', '/v1/jobs', 'h', 'completed', now(), now())`),
    ).toBe("23514");
    expect(
      await sqlState(sql`insert into rate_limit_overrides (account_id, account_limit, key_limit, window_s)
                         values (${a.accountId}, 0, 1, 60)`),
    ).toBe("23514");
  });
});
