import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { PlacementEvent } from "../core/schemas";
import type { Clock } from "./clock";
import { ControlPlaneError } from "./control-plane";
import { silentLogger } from "./logger";
import { EventOutbox } from "./outbox";

const dirs: string[] = [];
const dataDir = () => {
  const d = mkdtempSync(join(tmpdir(), "outbox-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const event = (id: string, type: "running" | "pulling" = "running"): PlacementEvent =>
  type === "running"
    ? { event_id: id, placement_id: "p1", at: 1, type: "running" }
    : { event_id: id, placement_id: "p1", at: 1, type: "pulling", progress: id };

/** Sleeps return at once but are recorded, so the backoff can be checked without waiting. */
function recordingClock(): Clock & { sleeps: number[] } {
  const sleeps: number[] = [];
  return { sleeps, now: () => 0, sleep: async (ms) => void sleeps.push(ms) };
}

describe("event outbox", () => {
  it("keeps events on disk until they are delivered, across a reopen", () => {
    const dir = dataDir();
    const a = EventOutbox.open(dir, { log: silentLogger });
    a.add(event("e1"));
    a.add(event("e2"));
    a.add(event("e1")); // already waiting
    const b = EventOutbox.open(dir, { log: silentLogger });
    expect(b.size).toBe(2);
    expect(b.has("e2")).toBe(true);
  });

  it("drops pull progress first, then the oldest, when full", () => {
    const box = EventOutbox.open(dataDir(), { maxEvents: 3, log: silentLogger });
    box.add(event("run-1"));
    box.add(event("pull-1", "pulling"));
    box.add(event("run-2"));
    box.add(event("run-3"));
    expect([box.has("pull-1"), box.size, box.dropped]).toEqual([false, 3, 1]);
    box.add(event("run-4"));
    expect(box.has("run-1")).toBe(false);
    expect(box.has("run-4")).toBe(true);
  });

  it("retries with backoff while the control plane is unreachable, then empties", async () => {
    const box = EventOutbox.open(dataDir(), { log: silentLogger });
    box.add(event("e1"));
    box.add(event("e2"));
    const clock = recordingClock();
    const sent: string[][] = [];
    let failures = 3;
    const stop = new AbortController();
    const loop = box.deliver(
      async (events) => {
        if (failures-- > 0) throw new ControlPlaneError("unreachable", "ECONNREFUSED");
        sent.push(events.map((e) => e.event_id));
      },
      {
        clock,
        signal: stop.signal,
        log: silentLogger,
        policy: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0 },
      },
    );
    await box.whenEmpty();
    stop.abort();
    await loop;
    expect(sent).toEqual([["e1", "e2"]]);
    expect(clock.sleeps).toEqual([100, 200, 400]);
    expect(EventOutbox.open(dirs[0]!, { log: silentLogger }).size).toBe(0);
  });

  it("drops only the event the control plane refuses", async () => {
    const box = EventOutbox.open(dataDir(), { log: silentLogger });
    for (const id of ["ok-1", "bad", "ok-2"]) box.add(event(id));
    const accepted: string[] = [];
    const stop = new AbortController();
    const loop = box.deliver(
      async (events) => {
        if (events.some((e) => e.event_id === "bad"))
          throw new ControlPlaneError("rejected", "400 invalid_request", 400);
        accepted.push(...events.map((e) => e.event_id));
      },
      { clock: recordingClock(), signal: stop.signal, log: silentLogger },
    );
    await box.whenEmpty();
    stop.abort();
    await loop;
    expect(accepted).toEqual(["ok-1", "ok-2"]);
  });
});
