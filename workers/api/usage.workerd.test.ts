/** `GET /v1/usage` through the Worker in workerd, on usage events and runs written as the outbox writes them. */
import { describe, expect, it } from "vitest";
import { monthOf } from "../../core/pricing/month";
import { addMember, call, signUp, sql } from "./test-support";

const MONTH_START = "(date_trunc('month', now() at time zone 'UTC') at time zone 'UTC')";

async function event(accountId: string, tier: string, model: string, gpuSeconds: number, from: string, to: string) {
  await sql(
    `insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
     select $1, $2, $3, $4, 1, $5, ${from}, ${to} from (select ${MONTH_START} as m) month`,
    [accountId, `run-${crypto.randomUUID()}`, tier, model, gpuSeconds],
  );
}

describe("usage", () => {
  it("prices a month's ended runs, its share of runs spanning the 1st, and running work so far", async () => {
    const user = await signUp();
    // Last month only; spanning the 1st (half each side); this month, a run of no length.
    await event(user.accountId, "flex", "H100", 3600, "m - interval '3 hours'", "m - interval '2 hours'");
    await event(user.accountId, "flex", "H100", 7200, "m - interval '1 hour'", "m + interval '1 hour'");
    await event(user.accountId, "fast", "H200", 600, "m + interval '1 hour'", "m + interval '1 hour'");
    // A Fast job running on an H100 node for 10 minutes with 2 GPUs.
    const nodeId = `usage-node-${crypto.randomUUID().slice(0, 8)}`;
    await sql(
      `insert into nodes (id, region, zone, gpu_model, gpu_count, cpu_milli, memory_mib, state)
       values ($1, 'us-west-1', 'test', 'H100', 8, 16000, 65536, 'ready')`,
      [nodeId],
    );
    const [job] = await sql<{ id: string }>(
      `insert into jobs (account_id, region, tier, image, gpu_count, cpu_milli, memory_mib, max_runtime_s, status)
       values ($1, 'us-west-1', 'fast', 'busybox', 2, 1000, 1024, 3600, 'running') returning id`,
      [user.accountId],
    );
    const [run] = await sql<{ this_month: number; last_month: number }>(
      `insert into job_runs (id, job_id, account_id, attempt, node_id, status, gpu_count, placed_at, started_at)
       values ($1, $2, $3, 1, $4, 'running', 2, now(), now() - interval '10 minutes')
       returning extract(epoch from now() - greatest(started_at, ${MONTH_START}))::float8 as this_month,
                 greatest(0, extract(epoch from ${MONTH_START} - started_at))::float8 as last_month`,
      [`pl-${crypto.randomUUID()}`, job!.id, user.accountId, nodeId],
    );

    const now = await call("GET", "/v1/usage", user.token);
    expect(now.status).toBe(200);
    expect(now.json.month).toBe(monthOf(Date.now()));
    expect(now.json.currency).toBe("usd");
    const runningSecs = Math.ceil(2 * run!.this_month);
    const lines = now.json.lines as { state: string; tier: string; gpu_model: string; gpu_seconds: number }[];
    expect(lines.filter((l) => l.state === "ended")).toEqual([
      { tier: "fast", gpu_model: "H200", state: "ended", gpu_seconds: 600, cents_per_gpu_hour: 399, amount_cents: 67 },
      {
        tier: "flex",
        gpu_model: "H100",
        state: "ended",
        gpu_seconds: 3600,
        cents_per_gpu_hour: 179,
        amount_cents: 179,
      },
    ]);
    const running = lines.find((l) => l.state === "running")!;
    expect(running).toMatchObject({ tier: "fast", gpu_model: "H100", cents_per_gpu_hour: 299 });
    expect(running.gpu_seconds).toBeGreaterThanOrEqual(runningSecs);
    expect(running.gpu_seconds).toBeLessThanOrEqual(runningSecs + 4); // the seconds between the insert and the read
    expect(now.json.total_gpu_seconds).toBe(600 + 3600 + running.gpu_seconds);
    expect(now.json.total_cents).toBe(67 + 179 + Math.ceil((running.gpu_seconds * 299) / 3600));

    // Last month: the whole of the first run and the other half of the spanning one.
    const start = new Date(now.json.period_start);
    const previous = monthOf(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() - 1, 1));
    const last = await call("GET", `/v1/usage?month=${previous}`, user.token);
    expect(last.status).toBe(200);
    expect(last.json.period_end).toBe(now.json.period_start);
    const ended = last.json.lines.filter((l: { state: string }) => l.state === "ended");
    expect(ended).toEqual([
      {
        tier: "flex",
        gpu_model: "H100",
        state: "ended",
        gpu_seconds: 7200,
        cents_per_gpu_hour: 179,
        amount_cents: 358,
      },
    ]);
    expect(last.json.lines.some((l: { state: string }) => l.state === "running")).toBe(run!.last_month > 0);

    // Another account sees none of it.
    const stranger = await signUp();
    expect((await call("GET", "/v1/usage", stranger.token)).json).toMatchObject({ lines: [], total_cents: 0 });
  });

  it("refuses a malformed or future month, and a caller without billing:read", async () => {
    const owner = await signUp();
    const bad = await call("GET", "/v1/usage?month=2026-13", owner.token);
    expect(bad.status).toBe(400);
    expect(bad.json.error.details.fields[0].field).toBe("month");
    // Postgres has no year 0.
    const yearZero = await call("GET", "/v1/usage?month=0000-01", owner.token);
    expect(yearZero.status).toBe(400);
    expect(yearZero.json.error.details.fields[0].field).toBe("month");
    const future = await call("GET", "/v1/usage?month=2999-01", owner.token);
    expect(future.status).toBe(400);
    expect(future.json.error.details.fields[0]).toMatchObject({ field: "month", code: "future_month" });
    const member = await addMember(owner.accountId, "member");
    const refused = await call("GET", "/v1/usage", member.token, { account: owner.accountId });
    expect(refused.status).toBe(403);
    expect(refused.json.error.code).toBe("missing_scope");
  });
});
