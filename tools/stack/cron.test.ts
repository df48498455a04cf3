/** The stack reads the cron expressions from wrangler.toml instead of hard-coding them. */
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../db/local";
import { SimEngine } from "../sfcompute-sim/engine";
import { parseCrons, readCrons } from "./cron";
import { driveMarketClock } from "./market-clock";

describe("parseCrons", () => {
  it("reads [triggers] crons, single or multi-line, ignoring comments and other tables", () => {
    expect(parseCrons('[vars]\ncrons = ["nope"]\n[triggers]\ncrons = ["* * * * *"]\n')).toEqual(["* * * * *"]);
    expect(
      parseCrons("[triggers]\n# every minute and hourly\ncrons = [\n  \"* * * * *\", # minute\n  '0 * * * *',\n]\n"),
    ).toEqual(["* * * * *", "0 * * * *"]);
    expect(parseCrons('[vars]\nA = "1"\n')).toEqual([]);
  });

  it("finds the Worker's own schedule in wrangler.toml", () => {
    expect(readCrons(resolve(ROOT, "wrangler.toml"))).toContain("* * * * *");
  });
});

describe("driveMarketClock", () => {
  it("keeps the virtual clock in step with the wall clock, and jumps ahead on demand", () => {
    let wall = Date.parse("2026-03-02T17:20:00Z");
    const engine = new SimEngine({ clock: "virtual", start: wall, seed: 1 });
    const clock = driveMarketClock(engine, { wall: () => wall, stepMs: 60_000 });
    try {
      wall += 1_500;
      expect(clock.now()).toBe(wall);
      clock.jump(3_600_000);
      expect(engine.now()).toBe(wall + 3_600_000);
      wall += 500;
      expect(clock.now()).toBe(wall + 3_600_000);
      expect(() => clock.jump(-1)).toThrow(RangeError);
    } finally {
      clock.stop();
    }
  });
});
