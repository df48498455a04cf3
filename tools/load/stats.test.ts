import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { histogram, percentile, percentiles, ratio, renderHistogram, serverTimings } from "./stats";

describe("percentile (nearest rank)", () => {
  it.each([
    // 1..100: the 50th value is 50, the 99th is 99, the 100th is 100
    [50, 50],
    [99, 99],
    [100, 100],
    [1, 1],
    [0.5, 1], // ceil(0.005·100) = 1st
  ])("p%s of 1..100 is %s", (p, expected) => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i); // unsorted on purpose
    expect(percentile(values, p)).toBe(expected);
  });

  it("is a value that occurred, never an interpolation", () => {
    // 4 values: p50 rank ceil(2) = 2nd → 20; p99 rank ceil(3.96) = 4th → 40
    expect(percentile([40, 10, 30, 20], 50)).toBe(20);
    expect(percentile([40, 10, 30, 20], 99)).toBe(40);
  });

  it("p99 of fewer than 100 samples is the maximum", () => {
    expect(percentile([3, 9, 1], 99)).toBe(9);
  });

  it("is null without values and refuses p outside (0, 100]", () => {
    expect(percentile([], 50)).toBeNull();
    expect(() => percentile([1], 0)).toThrow(RangeError);
    expect(() => percentile([1], 101)).toThrow(RangeError);
    expect(() => percentile([1], Number.NaN)).toThrow(RangeError);
  });

  it("does not reorder its input", () => {
    const values = [3, 1, 2];
    percentile(values, 50);
    expect(values).toEqual([3, 1, 2]);
  });

  it("property: at least p% of values are ≤ it, and fewer than p% are < it", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: -1000, max: 1000 }), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 100 }),
        (values, p) => {
          const q = percentile(values, p)!;
          expect(values).toContain(q);
          const atOrBelow = values.filter((v) => v <= q).length;
          const below = values.filter((v) => v < q).length;
          expect(atOrBelow / values.length).toBeGreaterThanOrEqual(p / 100);
          expect(below / values.length).toBeLessThan(p / 100);
        },
      ),
    );
  });

  it("property: monotone in p", () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 1 }), (values) => {
        expect(percentile(values, 50)!).toBeLessThanOrEqual(percentile(values, 99)!);
      }),
    );
  });
});

describe("percentiles", () => {
  it("rounds to 0.1 ms and reports null for no samples", () => {
    expect(percentiles([1.234, 5.678])).toEqual({ p50: 1.2, p99: 5.7 });
    expect(percentiles([])).toEqual({ p50: null, p99: null });
  });
});

describe("ratio", () => {
  it("divides and rounds to 0.01", () => {
    expect(ratio(30, 12)).toBe(2.5);
    expect(ratio(10, 3)).toBe(3.33);
  });
  it("is null when a side is missing or the divisor is not positive", () => {
    expect(ratio(null, 1)).toBeNull();
    expect(ratio(1, null)).toBeNull();
    expect(ratio(1, 0)).toBeNull();
  });
});

describe("serverTimings", () => {
  it("reads each metric's duration, quoted descriptions with commas and semicolons included", () => {
    expect(
      serverTimings(
        'auth;desc="credential checked (a, b; c)";dur=48.5, claim;dur=18,write;desc="x";dur=56, total;desc="in the Worker";dur=177.25',
      ),
    ).toEqual({ auth: 48.5, claim: 18, write: 56, total: 177.25 });
  });

  it("leaves out entries without a duration and keeps a repeated name's first", () => {
    expect(serverTimings("region;desc=eu, cache, a;dur=1, a;dur=2, b;dur=x")).toEqual({ a: 1 });
    expect(serverTimings(undefined)).toEqual({});
    expect(serverTimings("")).toEqual({});
  });
});

describe("histogram", () => {
  it("puts each value in its doubling bucket, with an open last bucket", () => {
    // bounds 0, 1, 2, 4, 8 then ≥ 8: 0.5 → [0,1); 1 → [1,2); 3 → [2,4); 7.9 → [4,8); 8, 100 → ≥ 8
    const b = histogram([0.5, 1, 3, 7.9, 8, 100, -2], 1, 8);
    expect(b).toEqual([
      { from: 0, to: 1, count: 2 }, // 0.5 and the negative value
      { from: 1, to: 2, count: 1 },
      { from: 2, to: 4, count: 1 },
      { from: 4, to: 8, count: 1 },
      { from: 8, to: null, count: 2 },
    ]);
  });

  it("property: counts add up to the number of values", () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: -10, max: 1e5, noNaN: true })), (values) => {
        const total = histogram(values).reduce((n, b) => n + b.count, 0);
        expect(total).toBe(values.length);
      }),
    );
  });

  it("refuses bad bounds", () => {
    expect(() => histogram([], 0, 8)).toThrow(RangeError);
    expect(() => histogram([], 8, 4)).toThrow(RangeError);
  });

  it("renders only the non-empty buckets", () => {
    const text = renderHistogram("submit", histogram([3, 3, 3, 100], 1, 8), 10);
    expect(text).toBe(["submit:", "  2–4 ms │ ########## 3", "  ≥ 8 ms │ ### 1"].join("\n"));
    expect(renderHistogram("empty", histogram([]))).toBe("empty: no samples");
  });
});
