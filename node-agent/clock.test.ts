import { afterEach, describe, expect, it, vi } from "vitest";
import { systemClock } from "./clock";

afterEach(() => {
  vi.restoreAllMocks();
});

/** How long `systemClock.sleep(ms)` took, or null if it had not resolved after `limitMs`. */
async function timedSleep(ms: number, limitMs: number): Promise<number | null> {
  const start = performance.now();
  const slept = systemClock.sleep(ms).then(() => performance.now() - start);
  const limit = new Promise<null>((done) => setTimeout(() => done(null), limitMs));
  return Promise.race([slept, limit]);
}

describe("the system clock's sleep", () => {
  it("keeps time when the wall clock is stepped back meanwhile (NTP after boot)", async () => {
    const wall = Date.now.bind(Date);
    const slept = timedSleep(200, 2_000);
    vi.spyOn(Date, "now").mockImplementation(() => wall() - 60_000);
    const took = await slept;
    expect(took).not.toBeNull();
    expect(took).toBeGreaterThanOrEqual(195);
    expect(took).toBeLessThan(1_500);
  });

  it("does not end early when the wall clock is stepped forward", async () => {
    const wall = Date.now.bind(Date);
    const slept = timedSleep(200, 2_000);
    vi.spyOn(Date, "now").mockImplementation(() => wall() + 3_600_000);
    expect(await slept).toBeGreaterThanOrEqual(195);
  });

  it("ends at once when its signal aborts", async () => {
    const stop = new AbortController();
    const slept = systemClock.sleep(60_000, stop.signal);
    stop.abort();
    await slept;
    await systemClock.sleep(60_000, stop.signal);
  });
});

describe("the system clock's monotonic reading", () => {
  it("does not move when the wall clock is stepped", () => {
    const wall = Date.now.bind(Date);
    const before = systemClock.monotonic();
    vi.spyOn(Date, "now").mockImplementation(() => wall() + 3_600_000);
    expect(systemClock.monotonic() - before).toBeLessThan(1_000);
  });
});
