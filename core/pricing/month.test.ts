import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { monthBounds, monthOf, shareInside } from "./month";

describe("months", () => {
  it("bounds a month in UTC, December into January, and refuses what names no month", () => {
    expect(monthBounds("2026-11")).toEqual({
      month: "2026-11",
      startMs: Date.parse("2026-11-01T00:00:00Z"),
      endMs: Date.parse("2026-12-01T00:00:00Z"),
    });
    expect(monthBounds("2026-12")?.endMs).toBe(Date.parse("2027-01-01T00:00:00Z"));
    // Years below 100 are those years, not 1900–1999 (Date.UTC's reading); year 0 (no year in Postgres) is none.
    expect(monthBounds("0099-12")).toMatchObject({
      startMs: Date.parse("0099-12-01T00:00:00Z"),
      endMs: Date.parse("0100-01-01T00:00:00Z"),
    });
    expect(monthOf(monthBounds("0099-12")!.startMs)).toBe("0099-12");
    for (const bad of ["2026-13", "2026-00", "2026-1", "26-11", "2026-11-01", "0000-01", ""])
      expect(monthBounds(bad)).toBeNull();
    expect(monthOf(Date.parse("2026-11-30T23:59:59.999Z"))).toBe("2026-11");
    expect(monthOf(Date.parse("2026-12-01T00:00:00Z"))).toBe("2026-12");
  });

  it("splits a run across the months it spans, by time", () => {
    const nov = monthBounds("2026-11")!;
    const dec = monthBounds("2026-12")!;
    const from = Date.parse("2026-11-30T23:00:00Z");
    const to = Date.parse("2026-12-01T01:00:00Z");
    expect(shareInside(7200 * 8, from, to, nov)).toBe(3600 * 8);
    expect(shareInside(7200 * 8, from, to, dec)).toBe(3600 * 8);
    expect(shareInside(100, from, to, monthBounds("2026-10")!)).toBe(0);
    expect(shareInside(0, from, from, nov)).toBe(0);
    expect(shareInside(5, from, from, nov)).toBe(5);
  });

  it("gives every GPU-second to exactly one month (property)", () => {
    const start = Date.parse("2026-01-01T00:00:00Z");
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 300 * 86_400_000 }),
        fc.integer({ min: 0, max: 90 * 86_400_000 }),
        fc.integer({ min: 0, max: 10_000_000 }),
        (offset, length, gpuSeconds) => {
          const from = start + offset;
          const to = from + length;
          let total = 0;
          for (let m = monthOf(from); ; ) {
            const b = monthBounds(m)!;
            total += shareInside(gpuSeconds, from, to, b);
            if (b.endMs > to || (length === 0 && b.endMs > from)) break;
            m = monthOf(b.endMs);
          }
          expect(total).toBeCloseTo(gpuSeconds, 3);
        },
      ),
    );
  });
});
