/**
 * The client inside workerd, as the Worker runs it: against the simulator's fetch handler in the
 * same isolate (the simulator's engine and routes are plain TypeScript with no Node built-ins).
 */
import { describe, expect, it } from "vitest";
import { Simulator } from "../../tools/sfcompute-sim/simulator";
import { SfComputeClient } from "./client";
import { alignBlock, blockCents, HOUR_MS } from "./units";

const START = Date.parse("2026-03-02T17:20:00Z");

describe("SF Compute client in workerd", () => {
  it("quotes, places an order with an idempotency key, and reads it back once filled", async () => {
    const sim = new Simulator({ clock: "virtual", start: START, token: "workerd-token", seed: 3 });
    const client = new SfComputeClient({
      baseUrl: "https://api.sfcompute.test",
      token: "workerd-token",
      fetch: sim.fetch,
    });
    const quote = await client.quote({ side: "buy", quantity: 1, instance_type: "h100v", duration: 2 * 3600 });
    expect(quote.quote).not.toBeNull();
    const { end_at } = alignBlock("NOW", 2 * HOUR_MS, START);
    expect(quote.quote!.end_at).toBe(end_at.toISOString());
    const created = await client.placeBuyOrder(
      { cluster: quote.quote!.zone!, quantity: 1, start_at: "NOW", end_at, price: quote.quote!.price },
      { idempotencyKey: "wk-1" },
    );
    const again = await client.placeBuyOrder(
      { cluster: quote.quote!.zone!, quantity: 1, start_at: "NOW", end_at, price: quote.quote!.price },
      { idempotencyKey: "wk-1" },
    );
    expect(again.id).toBe(created.id);
    sim.engine.advanceBy(1000);
    const order = await client.getOrder(created.id);
    expect(order.status).toBe("filled");
    expect(order.execution_price).toBe(quote.quote!.price);
    expect(blockCents(order.price)).toBe(quote.quote!.price);
  });
});
