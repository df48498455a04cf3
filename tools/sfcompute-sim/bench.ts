/**
 * `npm run bench:sim [-- --days 14 --step-minutes 1]`: how fast the market runs in virtual time,
 * driven the three ways a trace replay can drive it. Each run walks the same days in steps (a
 * one-minute cron by default) and, per step, quotes; every 10 steps it buys a small block, every
 * 60 it creates a reserved node, extends one and sells an hour back. Prints one JSON document; the
 * baseline is the same walk with no calls (the clock and hourly price steps alone), in the same run.
 */
import { parseArgs } from "node:util";
import { SfComputeClient } from "../../workers/sfcompute/client";
import { blockCents, centsPerNodeHour, epochSeconds } from "../../workers/sfcompute/units";
import { HOUR_MS, MINUTE_MS } from "./clock";
import { SimEngine } from "./engine";
import { startSimulatorServer } from "./server";
import { Simulator } from "./simulator";
import { TEST_START } from "./testing";

const { values } = parseArgs({
  options: { days: { type: "string", default: "14" }, "step-minutes": { type: "string", default: "1" } },
});
const days = Number(values.days);
const stepMs = Number(values["step-minutes"]) * MINUTE_MS;
const steps = Math.round((days * 24 * HOUR_MS) / stepMs);
const BALANCE = 10_000_000_000;

interface Market {
  advance(ms: number): Promise<void>;
  quote(): Promise<void>;
  buy(): Promise<void>;
  nodeCycle(): Promise<void>;
}

async function walk(name: string, market: Market, calls: boolean) {
  const started = performance.now();
  let n = 0;
  for (let i = 0; i < steps; i++) {
    if (calls) {
      await market.quote();
      n++;
      if (i % 10 === 0) {
        await market.buy();
        n++;
      }
      if (i % 60 === 0) {
        await market.nodeCycle();
        n += 3;
      }
    }
    await market.advance(stepMs);
  }
  const ms = performance.now() - started;
  return {
    scenario: name,
    steps,
    api_calls: n,
    wall_ms: Math.round(ms),
    calls_per_s: n ? Math.round((n / ms) * 1000) : null,
  };
}

function direct(): Market {
  const engine = new SimEngine({ seed: 1, clock: "virtual", start: TEST_START });
  const me = engine.createAccount({ token: "bench", balanceCents: BALANCE });
  const hour = (plus: number) => (Math.ceil(engine.now() / HOUR_MS) + plus) * HOUR_MS;
  let node: string | null = null;
  return {
    advance: async (ms) => void engine.advanceBy(ms),
    quote: async () =>
      void engine.market.quote(me, { side: "buy", quantity: 2, instance_type: "h100v", duration: 4 * 3600 }),
    buy: async () =>
      void engine.market.placeOrder(me, {
        side: "buy",
        instance_type: "h100v",
        quantity: 1,
        start_at: "NOW",
        end_at: hour(2),
        price: 1_000_000,
      }),
    nodeCycle: async () => {
      if (node) {
        try {
          engine.nodes.extend(me, node, { duration_seconds: 3600, max_price_per_node_hour: 5_000 });
        } catch {
          // the node may have failed to buy or ended; the next cycle makes another
        }
      }
      const [created] = engine.nodes.create(me, {
        desired_count: 1,
        max_price_per_node_hour: 5_000,
        zone: "hayesvalley",
        end_at: hour(3) / 1000,
      });
      node = created!.id;
    },
  };
}

function viaClient(client: SfComputeClient, advance: (ms: number) => Promise<void>, now: () => number): Market {
  const hour = (plus: number) => (Math.ceil(now() / HOUR_MS) + plus) * HOUR_MS;
  let node: string | null = null;
  return {
    advance,
    quote: async () =>
      void (await client.quote({ side: "buy", quantity: 2, instance_type: "h100v", duration: 4 * 3600 })),
    buy: async () =>
      void (await client.placeBuyOrder({
        instance_type: "h100v",
        quantity: 1,
        start_at: "NOW",
        end_at: new Date(hour(2)),
        price: blockCents(1_000_000),
      })),
    nodeCycle: async () => {
      if (node)
        await client
          .extendNode(node, { duration_seconds: 3600, max_price_per_node_hour: centsPerNodeHour(5_000) })
          .catch(() => {});
      const [created] = await client.createNodes({
        desired_count: 1,
        max_price_per_node_hour: centsPerNodeHour(5_000),
        zone: "hayesvalley",
        end_at: epochSeconds(hour(3) / 1000),
      });
      node = created!.id;
    },
  };
}

const results = [];
results.push({ ...(await walk("baseline: engine, clock only", direct(), false)), baseline: true });
results.push(await walk("engine in-process (direct calls)", direct(), true));

const inProcess = new Simulator({
  clock: "virtual",
  start: TEST_START,
  seed: 1,
  token: "bench",
  balanceCents: BALANCE,
});
results.push(
  await walk(
    "client → simulator fetch handler, in-process",
    viaClient(
      new SfComputeClient({ baseUrl: "http://sim.invalid", token: "bench", fetch: inProcess.fetch }),
      async (ms) => void inProcess.engine.advanceBy(ms),
      () => inProcess.engine.now(),
    ),
    true,
  ),
);

const server = await startSimulatorServer({
  clock: "virtual",
  start: TEST_START,
  seed: 1,
  token: "bench",
  balanceCents: BALANCE,
});
try {
  results.push(
    await walk(
      "client → simulator over HTTP (POST /_sim/clock/advance)",
      viaClient(
        new SfComputeClient({ baseUrl: server.url, token: "bench" }),
        async (ms) => {
          const res = await fetch(`${server.url}/_sim/clock/advance`, { method: "POST", body: JSON.stringify({ ms }) });
          await res.arrayBuffer();
        },
        () => server.sim.engine.now(),
      ),
      true,
    ),
  );
} finally {
  await server.close();
}

console.log(
  JSON.stringify(
    { bench: "sfcompute-sim virtual time", days, step_minutes: stepMs / MINUTE_MS, node: process.version, results },
    null,
    2,
  ),
);
