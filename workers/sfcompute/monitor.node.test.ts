/**
 * Market monitoring against a real (embedded) Postgres and the simulator: the order journal, fill
 * latency, time to expiry of active blocks, and the warning for a block with running work that
 * ends without an extension.
 */
import { randomUUID } from "node:crypto";
import { drizzle } from "drizzle-orm/postgres-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestSimulator, type TestSimulator } from "../../tools/sfcompute-sim/testing";
import { createTestDatabase, type TestDatabase } from "../../tools/test/database";
import { has } from "../../tools/test/parts";
import type { Logger } from "../http/log";
import { SfComputeClient } from "./client";
import type { MarketDb } from "./db";
import { type OrderIntent, placeJournaledOrder } from "./journal";
import { monitorPresent, runMarketMonitor } from "./monitor";
import { blockCents, HOUR_MS, MINUTE_MS } from "./units";

/** A logger that keeps what it is told, to check metrics and warnings. */
function recordingLogger(): Logger & { lines: { level: string; event: string; fields: Record<string, unknown> }[] } {
  const lines: { level: string; event: string; fields: Record<string, unknown> }[] = [];
  const make = (base: Record<string, unknown>): Logger => ({
    debug: (event, fields) => lines.push({ level: "debug", event, fields: { ...base, ...fields } }),
    info: (event, fields) => lines.push({ level: "info", event, fields: { ...base, ...fields } }),
    warn: (event, fields) => lines.push({ level: "warn", event, fields: { ...base, ...fields } }),
    error: (event, fields) => lines.push({ level: "error", event, fields: { ...base, ...fields } }),
    child: (fields) => make({ ...base, ...fields }),
  });
  return Object.assign(make({}), { lines });
}

describe.skipIf(!has("postgres"))("market monitoring", () => {
  let database: TestDatabase;
  let db: MarketDb;
  let sim: TestSimulator;
  let client: SfComputeClient;

  beforeAll(async () => {
    database = await createTestDatabase();
    db = drizzle(database.sql);
    sim = await startTestSimulator();
    client = new SfComputeClient({ baseUrl: sim.url, token: sim.token, timeoutMs: 400, retry: { baseDelayMs: 10 } });
  });
  afterAll(async () => {
    await sim?.close();
    await database?.drop();
  });

  const simNow = () => new Date(sim.now());
  /** A one-node buy from NOW to two hours past the next hour. */
  const intent = (overrides: Partial<OrderIntent> = {}): OrderIntent => ({
    region: "us-west-1",
    side: "buy",
    instanceType: "h100v",
    quantity: 1,
    startAt: "NOW",
    endAt: new Date(Math.ceil(sim.now() / HOUR_MS) * HOUR_MS + 2 * HOUR_MS),
    limitPrice: blockCents(1_000_000),
    ...overrides,
  });

  it("journals an order before sending it, follows it to filled, and records the fill latency", async () => {
    const placedAt = simNow();
    const row = await placeJournaledOrder(db, client, intent({ zone: "hayesvalley", purpose: "capacity" }), placedAt);
    expect(row).toMatchObject({ status: "pending", sfOrderId: expect.stringMatching(/^ordr_/), placedAt });

    sim.advance(50); // the simulator matches 50 ms after the POST
    const log = recordingLogger();
    const report = await runMarketMonitor(db, { now: simNow(), warningWindowMs: 30 * MINUTE_MS, client, log });
    expect(report.ordersChecked).toBe(1);
    expect(report.fills).toEqual([{ id: row.id, sfOrderId: row.sfOrderId, fillLatencyMs: 50 }]);
    const [after] =
      await database.sql`select status, fill_latency_ms, execution_price_cents, filled_at from market_orders where id = ${row.id}`;
    expect(after).toMatchObject({ status: "filled", fill_latency_ms: "50" });
    expect(Number(after!.execution_price_cents)).toBeGreaterThan(0);
    expect(log.lines).toContainEqual(
      expect.objectContaining({
        event: "metric",
        fields: expect.objectContaining({ metric: "sfcompute.order_fill_latency_ms", value: 50 }),
      }),
    );
    // A filled order is not followed again.
    expect((await runMarketMonitor(db, { now: simNow(), warningWindowMs: 0, client, log })).ordersChecked).toBe(0);
  });

  it("ends with one order when the answer to the POST is lost, and resumes a journaled intent by its key", async () => {
    sim.sim.faults.add({ action: "lose_response", method: "POST", path: "/v0/orders" });
    const keyed = intent({ idempotencyKey: `intent-${randomUUID()}` });
    const first = await placeJournaledOrder(db, client, keyed, simNow());
    const again = await placeJournaledOrder(db, client, keyed, simNow());
    expect(again.id).toBe(first.id);
    expect(again.sfOrderId).toBe(first.sfOrderId);
    const [{ n }] =
      (await database.sql`select count(*)::int as n from market_orders where idempotency_key = ${keyed.idempotencyKey!}`) as unknown as [
        { n: number },
      ];
    expect(n).toBe(1);
    expect(sim.sim.engine.market.orders.get(first.sfOrderId!)?.idempotencyKey).toBe(keyed.idempotencyKey);
  });

  it("retries a 409 on a keyed order, and leaves an order still answered 409 placing to resume by its key", async () => {
    sim.sim.faults.add({ action: "error", status: 409, method: "POST", path: "/v0/orders" });
    const row = await placeJournaledOrder(db, client, intent({ idempotencyKey: `conflict-${randomUUID()}` }), simNow());
    expect(row).toMatchObject({ status: "pending", sfOrderId: expect.stringMatching(/^ordr_/) });

    sim.sim.faults.add({ action: "error", status: 409, method: "POST", path: "/v0/orders", times: 10 });
    const keyed = intent({ idempotencyKey: `conflict-${randomUUID()}` });
    const answered = await placeJournaledOrder(db, client, keyed, simNow()).catch((error: unknown) => error);
    sim.sim.faults.clear();
    expect(answered).toMatchObject({ status: 409 });
    const [stuck] =
      await database.sql`select status from market_orders where idempotency_key = ${keyed.idempotencyKey!}`;
    expect(stuck).toMatchObject({ status: "placing" });
    expect(await placeJournaledOrder(db, client, keyed, simNow())).toMatchObject({ status: "pending" });
  });

  it("marks a refused order failed with the reason", async () => {
    const row = await placeJournaledOrder(
      db,
      client,
      intent({ instanceType: "b300", limitPrice: blockCents(1) }),
      simNow(),
    );
    expect(row).toMatchObject({ status: "failed", lastError: "Unknown instance type: b300", sfOrderId: null });
  });

  it("reports time to expiry of active blocks, and warns once about a block with running work ending unextended", async () => {
    const now = Date.parse("2026-03-02T18:40:00Z");
    const [account] = await database.sql`insert into accounts (name) values ('monitor test') returning id`;
    const block = async (zone: string, startOffset: number, endOffset: number) => {
      const [row] = await database.sql`
        insert into blocks (region, zone, instance_type, gpu_model, node_count, start_at, end_at, price_cents, status)
        values ('us-west-1', ${zone}, 'h100v', 'H100', 1, ${new Date(now + startOffset).toISOString()}, ${new Date(now + endOffset).toISOString()}, 1000, 'active')
        returning id`;
      return row!.id as string;
    };
    const withRunningWork = async (blockId: string) => {
      const nodeId = `node-${randomUUID()}`;
      await database.sql`insert into nodes (id, block_id, region, zone, gpu_model, gpu_count, cpu_milli, memory_mib, state)
                         values (${nodeId}, ${blockId}, 'us-west-1', 'hayesvalley', 'H100', 8, 64000, 512000, 'ready')`;
      const [job] =
        await database.sql`insert into jobs (account_id, region, tier, image, gpu_count, cpu_milli, memory_mib, max_runtime_s, status)
                                       values (${account!.id}, 'us-west-1', 'flex', 'img', 1, 1000, 1024, 3600, 'running') returning id`;
      await database.sql`insert into job_runs (id, job_id, account_id, attempt, node_id, status, gpu_count, placed_at)
                         values (${`run-${randomUUID()}`}, ${job!.id}, ${account!.id}, 1, ${nodeId}, 'running', 1, ${new Date(now - HOUR_MS).toISOString()})`;
    };
    // Ends in 20 min, work running, nothing after it: warn.
    const unextended = await block("hayesvalley", -HOUR_MS, 20 * MINUTE_MS);
    await withRunningWork(unextended);
    // Ends in 20 min, work running, but a block in the same zone carries on: no warning.
    const extended = await block("fishermanswharf", -HOUR_MS, 20 * MINUTE_MS);
    await withRunningWork(extended);
    await block("fishermanswharf", 20 * MINUTE_MS, 3 * HOUR_MS);
    // Ends in 20 min with nothing running, and ends in 2 h with work running: no warning.
    await block("marina", -HOUR_MS, 20 * MINUTE_MS);
    const later = await block("richmond", -HOUR_MS, 2 * HOUR_MS);
    await withRunningWork(later);

    const log = recordingLogger();
    const report = await runMarketMonitor(db, {
      now: new Date(now),
      warningWindowMs: 30 * MINUTE_MS,
      client: null,
      log,
    });
    const byId = new Map(report.blocks.map((b) => [b.block_id, b]));
    expect(byId.get(unextended)).toMatchObject({ seconds_to_expiry: 1200, running_runs: 1, extended: false });
    expect(byId.get(extended)).toMatchObject({ seconds_to_expiry: 1200, running_runs: 1, extended: true });
    expect(byId.get(later)).toMatchObject({ seconds_to_expiry: 7200, running_runs: 1 });
    expect(report.blocks).toHaveLength(4); // the continuing block has not started yet
    expect(report.warnings.map((w) => w.block_id)).toEqual([unextended]);
    expect(log.lines.filter((l) => l.level === "warn").map((l) => [l.event, l.fields.block_id])).toEqual([
      ["sfcompute.block_expiring_unextended", unextended],
    ]);
    expect(
      log.lines.filter((l) => l.fields.metric === "sfcompute.block_seconds_to_expiry").map((l) => l.fields.value),
    ).toEqual([1200, 1200, 1200, 7200]);
    const audit =
      await database.sql`select action, target_id, data from audit_log where action = 'block.expiring_unextended'`;
    expect(audit).toEqual([
      {
        action: "block.expiring_unextended",
        target_id: unextended,
        data: expect.objectContaining({ running_runs: 1, seconds_to_expiry: 1200 }),
      },
    ]);

    // A minute later: still unextended, but already warned.
    const next = await runMarketMonitor(db, {
      now: new Date(now + MINUTE_MS),
      warningWindowMs: 30 * MINUTE_MS,
      client: null,
      log,
    });
    expect(next.warnings).toEqual([]);
    // The view gives the same numbers with the database's clock.
    const [view] = await database.sql`select count(*)::int as n from block_expiry`;
    expect(typeof view!.n).toBe("number");
  });

  it("counts time to expiry on the capacity cycle's clock: the trigger's time with CAPACITY_CLOCK=trigger", async () => {
    // The market's present three hours ahead of the wall clock, as when the local stack jumped it.
    const marketNow = Date.now() + 3 * HOUR_MS;
    const [row] = await database.sql`
      insert into blocks (region, zone, instance_type, gpu_model, node_count, start_at, end_at, price_cents, status)
      values ('us-west-1', 'presidio', 'h100v', 'H100', 1, ${new Date(marketNow - HOUR_MS).toISOString()},
              ${new Date(marketNow + 20 * MINUTE_MS).toISOString()}, 1000, 'active')
      returning id`;
    const expiry = async (env: { CAPACITY_CLOCK?: string }, scheduledTime: number) => {
      const report = await runMarketMonitor(db, {
        now: monitorPresent(env, scheduledTime),
        warningWindowMs: 30 * MINUTE_MS,
        client: null,
        log: recordingLogger(),
      });
      return report.blocks.find((b) => b.block_id === row!.id)?.seconds_to_expiry;
    };
    const onTrigger = await expiry({ CAPACITY_CLOCK: "trigger" }, marketNow);
    expect(onTrigger).toBeGreaterThanOrEqual(1_195);
    expect(onTrigger).toBeLessThanOrEqual(1_200);
    // On the wall clock (the default) the block starts two hours from now: not among the active ones.
    expect(await expiry({}, marketNow)).toBeUndefined();
  });

  it("keeps the tables away from API roles", async () => {
    const grants = await database.sql`
      select grantee, privilege_type from information_schema.role_table_grants
       where table_name in ('market_orders', 'block_expiry') and grantee in ('anon', 'authenticated')`;
    expect(grants).toEqual([]);
  });
});
