/**
 * Simulator-only routes, all under `/_sim/` so they can never collide with SF Compute's paths: the
 * virtual clock, the event stream (server-sent events), fault injection, runtime settings, extra
 * accounts, the request log and the price path. Unauthenticated: the simulator listens on loopback.
 */
import { Hono } from "hono";
import type { SimEngine } from "./engine";
import { errorBody, invalid, notFound, SimError } from "./errors";
import type { SimEvent } from "./events";
import { asBody, isoTime, queryInt } from "./parse";
import type { Simulator } from "./simulator";
import { balancesJson } from "./wire";

export function createAdminApp(sim: Simulator): Hono {
  const app = new Hono();
  const engine = sim.engine;

  app.onError((error) => {
    const e = error instanceof SimError ? error : new SimError(400, "invalid_request_error", String(error));
    return Response.json(errorBody(e, "current"), { status: e.status });
  });
  app.notFound((c) =>
    Response.json(errorBody(notFound(`No route for ${c.req.method} ${c.req.path}`), "current"), { status: 404 }),
  );

  app.get("/_sim/state", (c) => c.json(stateOf(engine)));

  app.get("/_sim/clock", (c) => c.json(clockOf(engine)));

  app.post("/_sim/clock/advance", async (c) => {
    if (engine.clock.mode !== "virtual") throw invalid("The clock is real; start the simulator with --clock virtual");
    const body = asBody(await c.req.json().catch(() => ({})));
    if (typeof body.to === "string") engine.advanceTo(isoTime(body.to, "to"));
    else if (typeof body.to === "number") engine.advanceTo(body.to);
    else if (typeof body.seconds === "number") engine.advanceBy(body.seconds * 1000);
    else if (typeof body.ms === "number") engine.advanceBy(body.ms);
    else throw invalid("Give one of seconds, ms, or to (epoch ms or ISO)");
    return c.json(clockOf(engine));
  });

  app.get("/_sim/events", (c) => {
    const since = queryInt(new URL(c.req.url).searchParams, "since") ?? Number(c.req.header("Last-Event-ID") ?? 0);
    const types = c.req.query("types")?.split(",");
    return eventStream(engine, since, types);
  });

  app.get("/_sim/events/list", (c) => {
    const since = queryInt(new URL(c.req.url).searchParams, "since") ?? 0;
    const types = c.req.query("types")?.split(",");
    return c.json({
      data: engine.eventsSince(since).filter((e) => !types || types.includes(e.type)),
      last_seq: engine.k.events.lastSeq,
    });
  });

  app.get("/_sim/faults", (c) => c.json({ data: sim.faults.list() }));
  app.post("/_sim/faults", async (c) => {
    const body = await c.req.json();
    const rules = Array.isArray(body) ? body : [body];
    const ids = rules.map((r) =>
      sim.faults.add({ ...r, times: r.times === null ? Number.POSITIVE_INFINITY : r.times }),
    );
    return c.json({ ids }, 201);
  });
  app.delete("/_sim/faults", (c) => {
    sim.faults.clear();
    return c.body(null, 204);
  });

  app.get("/_sim/config", (c) => c.json({ settings: engine.settings, rate_limit: sim.rateLimiter.config }));
  app.patch("/_sim/config", async (c) => {
    const body = asBody(await c.req.json());
    const { rate_limit, ...settings } = body;
    if (rate_limit !== undefined) sim.rateLimiter.config = rate_limit as typeof sim.rateLimiter.config;
    engine.configure(settings);
    return c.json({ settings: engine.settings, rate_limit: sim.rateLimiter.config });
  });

  app.post("/_sim/accounts", async (c) => {
    const body = asBody(await c.req.json());
    if (typeof body.token !== "string" || body.token.length === 0) throw invalid("token is required", "token");
    if (engine.accountByToken(body.token)) throw new SimError(409, "conflict", "An account with this token exists");
    const account = engine.createAccount({
      token: body.token,
      balanceCents: typeof body.balance_cents === "number" ? body.balance_cents : 0,
      canBuy: body.can_buy as boolean | undefined,
      canSell: body.can_sell as boolean | undefined,
      frozen: body.frozen as boolean | undefined,
    });
    return c.json({ id: account.id, ...balancesJson(account) }, 201);
  });
  app.patch("/_sim/accounts/:id", async (c) => {
    const account = engine.accounts.get(c.req.param("id"));
    if (!account) throw notFound("Account not found");
    const body = asBody(await c.req.json());
    if (typeof body.credit_cents === "number") account.post(engine.now(), "credit", body.credit_cents, "admin");
    if (typeof body.can_buy === "boolean") account.canBuy = body.can_buy;
    if (typeof body.can_sell === "boolean") account.canSell = body.can_sell;
    if (typeof body.frozen === "boolean") account.frozen = body.frozen;
    return c.json({ id: account.id, ...balancesJson(account) });
  });

  app.get("/_sim/requests", (c) => c.json({ data: sim.requests }));
  app.delete("/_sim/requests", (c) => {
    sim.requests.length = 0;
    return c.body(null, 204);
  });

  /** The ask rate path of a zone (cents per GPU-hour) — an oracle view for analysing replays. */
  app.get("/_sim/prices", (c) => {
    const q = new URL(c.req.url).searchParams;
    const zone = engine.k.catalog.zones.get(q.get("zone") ?? "");
    if (!zone) throw invalid("zone is required and must exist", "zone");
    const from = q.get("from") ? isoTime(q.get("from")!, "from") : engine.now();
    const to = q.get("to") ? isoTime(q.get("to")!, "to") : from + 24 * 3_600_000;
    const step = (queryInt(q, "step_seconds") ?? 3600) * 1000;
    const hours = (queryInt(q, "duration_seconds") ?? 86_400) * 1000;
    const quantity = queryInt(q, "quantity") ?? 1;
    if (step < 60_000 || (to - from) / step > 10_000) throw invalid("at most 10 000 points, at least 60 s apart");
    const base = engine.k.catalog.instanceTypeOf(zone).base_cents_per_gpu_hour;
    const points = [];
    for (let t = from; t <= to; t += step) {
      const rate = engine.k.prices.askRate(base, zone.name, { start: t, end: t + hours, quantity }, t, 0);
      points.push({ at: new Date(t).toISOString(), cents_per_gpu_hour: Math.round(rate * 100) / 100 });
    }
    return c.json({ zone: zone.name, instance_type: zone.instance_type, data: points });
  });

  return app;
}

function clockOf(engine: SimEngine) {
  return { mode: engine.clock.mode, now: engine.now(), now_iso: new Date(engine.now()).toISOString() };
}

function stateOf(engine: SimEngine) {
  const count = <T>(items: Iterable<T>, key: (x: T) => string) => {
    const out: Record<string, number> = {};
    for (const x of items) out[key(x)] = (out[key(x)] ?? 0) + 1;
    return out;
  };
  return {
    ...clockOf(engine),
    seed: engine.settings.seed,
    accounts: [...engine.accounts.values()].map((a) => ({ id: a.id, ...balancesJson(a) })),
    orders: count(engine.market.orders.values(), (o) => o.status),
    contracts: engine.market.contracts.size,
    nodes: count(engine.nodes.nodes.values(), (n) => n.status),
    pending_timers: engine.k.timers.size,
    last_event_seq: engine.k.events.lastSeq,
  };
}

/** Server-sent events: the backlog after `since`, then live events, with a comment every 15 s. */
function eventStream(engine: SimEngine, since: number, types: string[] | undefined): Response {
  const encoder = new TextEncoder();
  let unsubscribe = () => {};
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  const frame = (e: SimEvent) => encoder.encode(`id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      const wanted = (e: SimEvent) => !types || types.includes(e.type);
      controller.enqueue(encoder.encode(": sfcompute-sim events\n\n"));
      for (const e of engine.eventsSince(since)) if (wanted(e)) controller.enqueue(frame(e));
      unsubscribe = engine.subscribe((e) => {
        if (wanted(e)) controller.enqueue(frame(e));
      });
      heartbeat = setInterval(() => controller.enqueue(encoder.encode(": keep-alive\n\n")), 15_000);
    },
    cancel() {
      unsubscribe();
      if (heartbeat !== undefined) clearInterval(heartbeat);
    },
  });
  return new Response(stream, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" },
  });
}
