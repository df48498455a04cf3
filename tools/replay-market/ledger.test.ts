import { describe, expect, it } from "vitest";
import { Ledger } from "./ledger";

const H = 3_600_000;

describe("Ledger", () => {
  it("counts spend and held capacity within the window, waits from the first node's readiness", () => {
    const ledger = new Ledger(0, 10 * H);
    ledger.submit("early", "fast", 0);
    ledger.submit("late", "fast", 2 * H);
    ledger.submit("stuck", "flex", 9 * H);
    ledger.nodeReady(0.1 * H);
    ledger.started("early", 0.1 * H); // cold start: not counted
    ledger.started("late", 2 * H + 30_000);
    // One node for 20 h at $200: half of it falls in the window.
    ledger.bought(20_000, 1, 0, 20 * H);
    ledger.used("fast", 4, 0.1 * H, 4.1 * H); // 16 GPU-h
    ledger.used("flex", 8, 8 * H, 12 * H); // 16 GPU-h inside the window
    const m = ledger.metrics({ fast: 0.1, flex: 0.05 });
    expect(m.spend_usd).toBe(100);
    expect(m.utilisation).toBe(0.4); // 32 GPU-h of 80
    expect(m.spend_per_used_gpu_hour_usd).toBe(3.125);
    expect(m.fast_start_p50_s).toBe(0);
    expect(m.fast_start_p99_s).toBe(30);
    expect(m.flex_wait_p99_s).toBe(3600); // still waiting at the end: 1 h so far
    // 16 GPU-h × 3600 s × 0.1¢ + 16 × 3600 × 0.05¢ = 8640¢
    expect(m.revenue_usd).toBe(86.4);
  });

  it("takes sold-back hours out of spend and of held capacity", () => {
    const ledger = new Ledger(0, 10 * H);
    ledger.bought(8_000, 2, 0, 10 * H);
    ledger.soldBack(2_000, 1, 5 * H, 10 * H);
    ledger.used("flex", 8, 0, 10 * H);
    const m = ledger.metrics({ fast: 0, flex: 0 });
    expect(m.spend_usd).toBe(60);
    expect(m.sold_back_node_hours).toBe(5);
    expect(m.utilisation).toBe(round(80 / 120));
  });
});

function round(x: number) {
  return Math.round(x * 10_000) / 10_000;
}
