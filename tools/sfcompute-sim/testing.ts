/**
 * For tests that need a market: a simulator on a free loopback port with a virtual clock at a fixed
 * Monday morning, short match delays and a quick boot, so tests are deterministic and advance time
 * explicitly instead of sleeping.
 */
import { DAY_MS, HOUR_MS } from "./clock";
import type { SimSettings } from "./config";
import type { DeepPartial } from "./engine";
import { type RunningSimulator, startSimulatorServer } from "./server";
import type { SimulatorOptions } from "./simulator";

/** Monday 2026-03-02 09:20 in San Francisco (17:20 UTC). */
export const TEST_START = Date.parse("2026-03-02T17:20:00Z");
export const TEST_TOKEN = "test-token";

export interface TestSimulator extends RunningSimulator {
  token: string;
  /** Moves the virtual clock and runs what falls due. */
  advance(ms: number): void;
  now(): number;
}

export async function startTestSimulator(
  options: SimulatorOptions & { settings?: DeepPartial<SimSettings> } = {},
): Promise<TestSimulator> {
  const running = await startSimulatorServer({
    clock: "virtual",
    start: TEST_START,
    seed: 42,
    token: TEST_TOKEN,
    bootSeconds: 120,
    ...options,
    settings: {
      ...options.settings,
      market: { matchDelayMs: [50, 50], cancelDelayMs: [20, 20], ...options.settings?.market },
    },
  });
  return {
    ...running,
    token: options.token ?? TEST_TOKEN,
    advance: (ms) => void running.sim.engine.advanceBy(ms),
    now: () => running.sim.engine.now(),
  };
}

export { DAY_MS, HOUR_MS };
