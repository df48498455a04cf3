/** Pure parts of the client: unit conversions, block alignment, retry delays, error bodies. */
import { describe, expect, it } from "vitest";
import { errorFromResponse } from "./errors";
import { advertisedDelayMs, backoffDelayMs, DEFAULT_RETRY_POLICY, retryDelayMs } from "./retry";
import {
  alignBlock,
  blockPriceFromGpuHourRate,
  blockPriceFromNodeHourRate,
  centsPerGpuHour,
  dollarsToCents,
  gpuHourFromNodeHour,
  gpuHourRateOfBlock,
  HOUR_MS,
  MINUTE_MS,
  maxBlockPriceAtNodeHourRate,
  nodeHourFromGpuHour,
  nodeHourRateOfBlock,
} from "./units";

describe("units", () => {
  it("prices a block as the CLI does: ceil(rate × nodes × 8 × hours), and reads the rate back", () => {
    // "$2.05 per GPU hour" for 1 node × 24 h = $393.60 (reference §13.1).
    expect(blockPriceFromGpuHourRate(centsPerGpuHour(205), 1, 24 * HOUR_MS)).toBe(39_360);
    expect(gpuHourRateOfBlock(39_360, 1, 24 * HOUR_MS)).toBeCloseTo(205, 10);
    // The CLI's unit test: price 10 000 for 1 node × 1 h is $12.50 per GPU-hour.
    expect(gpuHourRateOfBlock(10_000, 1, HOUR_MS)).toBe(1250);
    // $10/node-hour ($1.25/GPU-hour), 4 nodes, 90 minutes.
    expect(blockPriceFromNodeHourRate(1000, 4, 90 * MINUTE_MS)).toBe(6000);
    expect(nodeHourRateOfBlock(6000, 4, 90 * MINUTE_MS)).toBe(1000);
    expect(nodeHourFromGpuHour(centsPerGpuHour(125))).toBe(1000);
    expect(gpuHourFromNodeHour(1000)).toBe(125);
    expect(dollarsToCents(2.05)).toBe(205);
    // A limit from a node-hour rate never exceeds it: 1 node × 59 min at 1000 ¢/h is 983.33… → 983.
    expect(maxBlockPriceAtNodeHourRate(1000, 1, 59 * MINUTE_MS)).toBe(983);
  });

  it("aligns a block the CLI's way: NOW within a minute, else up to the hour; the end up to the hour, at least an hour on", () => {
    const now = Date.parse("2026-03-02T16:00:30Z");
    const soon = alignBlock("NOW", HOUR_MS, now);
    expect(soon.start_at).toBe("NOW");
    expect(soon.startMs).toBe(Date.parse("2026-03-02T16:01:00Z")); // the next minute
    expect(soon.end_at.toISOString()).toBe("2026-03-02T18:00:00.000Z");
    const later = alignBlock(new Date("2026-03-02T17:20:00Z"), 30 * MINUTE_MS, now);
    expect(later.start_at).toEqual(new Date("2026-03-02T18:00:00Z"));
    expect(later.end_at.toISOString()).toBe("2026-03-02T19:00:00.000Z");
  });
});

describe("retry delays", () => {
  const headers = (h: Record<string, string>) => new Headers(h);
  const now = Date.parse("2026-03-02T16:00:00Z");

  it("reads Retry-After (seconds or a date), retry-after-ms, and RateLimit-Reset (timestamp or delta)", () => {
    expect(advertisedDelayMs(headers({ "retry-after": "3" }), now)).toBe(3000);
    expect(advertisedDelayMs(headers({ "retry-after": "Mon, 02 Mar 2026 16:00:05 GMT" }), now)).toBe(5000);
    expect(advertisedDelayMs(headers({ "retry-after-ms": "150" }), now)).toBe(150);
    expect(advertisedDelayMs(headers({ "ratelimit-reset": String(now / 1000 + 2) }), now)).toBe(2000);
    expect(advertisedDelayMs(headers({ "ratelimit-reset": "2" }), now)).toBe(2000);
    expect(advertisedDelayMs(headers({}), now)).toBeNull();
    expect(advertisedDelayMs(headers({ "retry-after": "soon" }), now)).toBeNull();
  });

  it("reads RateLimit-Reset only on a 429 or an exhausted window: a 5xx on a limited path backs off as usual", () => {
    const window = { "ratelimit-limit": "60", "ratelimit-reset": String(now / 1000 + 600) };
    expect(advertisedDelayMs(headers({ ...window, "ratelimit-remaining": "0" }), now, 429)).toBe(600_000);
    expect(advertisedDelayMs(headers({ ...window, "ratelimit-remaining": "59" }), now, 503)).toBeNull();
    expect(advertisedDelayMs(headers({ ...window, "ratelimit-remaining": "0" }), now, 503)).toBe(600_000);
    expect(advertisedDelayMs(headers({ ...window, "retry-after": "2" }), now, 503)).toBe(2000);
  });

  it("backs off exponentially with full jitter up to a cap, and honours an advertised wait in full", () => {
    const policy = { ...DEFAULT_RETRY_POLICY, baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelayMs(1, policy, () => 0.999)).toBe(100);
    expect(backoffDelayMs(3, policy, () => 0.999)).toBe(400);
    expect(backoffDelayMs(10, policy, () => 0.999)).toBe(999);
    expect(backoffDelayMs(3, policy, () => 0)).toBe(0);
    expect(retryDelayMs(1, 2000, policy, () => 0)).toBe(2000);
    expect(retryDelayMs(1, 2000, policy, () => 0.5)).toBeGreaterThan(2000);
    expect(retryDelayMs(1, policy.maxAdvertisedDelayMs + 1, policy, () => 0)).toBeNull();
  });
});

describe("error bodies", () => {
  it("reads the current, flat and legacy shapes into status, code and message", () => {
    const current = errorFromResponse(
      400,
      JSON.stringify({
        error: {
          type: "invalid_request_error",
          message: "End time must be on the hour",
          details: [{ field: "end_at", code: "invalid_end_at", message: "x" }],
        },
      }),
    );
    expect(current).toMatchObject({
      status: 400,
      code: "invalid_request_error",
      message: "End time must be on the hour",
      reason: "invalid_end_at",
    });
    expect(current.extra.field).toBe("end_at");
    const flat = errorFromResponse(
      400,
      JSON.stringify({ type: "invalid_request_error", message: "Start time must be…", details: [] }),
    );
    expect(flat).toMatchObject({
      status: 400,
      code: "invalid_request_error",
      message: "Start time must be…",
      reason: "invalid_request_error",
    });
    const legacy = errorFromResponse(
      404,
      JSON.stringify({ object: "error", code: "order.not_found", message: "Order not found", details: {} }),
    );
    expect(legacy).toMatchObject({ status: 404, code: "order.not_found", message: "Order not found" });
  });

  it("copes with no body, and with a body that is not JSON", () => {
    expect(errorFromResponse(429, "")).toMatchObject({ status: 429, code: "rate_limited", transient: true });
    expect(errorFromResponse(502, "<html>Bad gateway</html>")).toMatchObject({
      status: 502,
      code: "api_error",
      transient: true,
    });
    expect(errorFromResponse(400, "nope")).toMatchObject({ status: 400, transient: false });
  });
});
