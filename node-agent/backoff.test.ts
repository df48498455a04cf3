import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Backoff, backoffDelay } from "./backoff";

const policy = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

describe("backoff", () => {
  it("doubles from the initial delay up to the cap (no jitter when random() is 0)", () => {
    const b = new Backoff(policy, () => 0);
    // 500, 1000, 2000, 4000, 8000, 16000, then capped at 30000
    expect(Array.from({ length: 8 }, () => b.next())).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    b.reset();
    expect(b.next()).toBe(500);
  });

  it("takes off at most the jitter share", () => {
    expect(backoffDelay(3, policy, () => 0.999999)).toBe(2000); // 4000 × (1 − 0.5 × ~1)
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (n, r) => {
          const step = Math.min(policy.maxMs, policy.initialMs * 2 ** n);
          const d = backoffDelay(n, policy, () => r);
          return d <= step && d >= Math.floor(step * (1 - policy.jitter));
        },
      ),
    );
  });
});
