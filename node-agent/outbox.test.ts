import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { PlacementEvent } from "../core/schemas";
import type { Clock } from "./clock";
import { AGENT_BATCH_BYTES, ControlPlaneError, jsonBytes } from "./control-plane";
import { type Logger, silentLogger } from "./logger";
import { EventOutbox, eventBatch } from "./outbox";
import { ANONYMOUS, PrivateImages } from "./private-images";
import { AgentState } from "./state";

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
  return { sleeps, now: () => 0, monotonic: () => 0, sleep: async (ms) => void sleeps.push(ms) };
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

  // A 401 or 403 while the node token is replaced (the new one not yet in place), a 404 from a
  // control plane without the route: nothing about the events themselves, so none is dropped.
  it.each([
    ["is unreachable", () => new ControlPlaneError("unreachable", "ECONNREFUSED")],
    ...[401, 403, 404].map((status) => [
      `answers ${status}`,
      () => new ControlPlaneError("rejected", `POST /v1/agent/events: ${status}`, status),
    ]),
  ] as [string, () => ControlPlaneError][])(
    "keeps every event and retries with backoff while the control plane %s, then empties",
    async (_, failure) => {
      const box = EventOutbox.open(dataDir(), { log: silentLogger });
      box.add({ event_id: "p1/exited", placement_id: "p1", at: 1, type: "exited", exit_code: 0 } as PlacementEvent);
      box.add({ event_id: "p2/failed", placement_id: "p2", at: 1, type: "failed", reason: "x" } as PlacementEvent);
      const clock = recordingClock();
      const sent: string[][] = [];
      let failures = 3;
      const stop = new AbortController();
      const loop = box.deliver(
        async (events) => {
          if (failures-- > 0) throw failure();
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
      expect(sent).toEqual([["p1/exited", "p2/failed"]]);
      expect(clock.sleeps).toEqual([100, 200, 400]);
      expect(EventOutbox.open(dirs[0]!, { log: silentLogger }).size).toBe(0);
    },
  );

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

describe("event batches", () => {
  it("stay under the control plane's body cap, in order, whatever the events' size", () => {
    // 500 failures with long reasons needing escapes: megabytes as one batch.
    const events: PlacementEvent[] = Array.from({ length: 500 }, (_, i) => ({
      event_id: `p${i}/failed`,
      placement_id: `p${i}`,
      type: "failed",
      at: 1,
      reason: `"\u0001${"x".repeat(2_000)}`,
    })) as PlacementEvent[];
    expect(jsonBytes({ events })).toBeGreaterThan(AGENT_BATCH_BYTES * 4);
    const sent: string[] = [];
    let rest = events;
    while (rest.length > 0) {
      const batch = eventBatch(rest);
      expect(batch.length).toBeGreaterThan(0);
      expect(jsonBytes({ events: batch })).toBeLessThanOrEqual(AGENT_BATCH_BYTES);
      sent.push(...batch.map((e) => e.event_id));
      rest = rest.slice(batch.length);
    }
    expect(sent).toEqual(events.map((e) => e.event_id));
    // Small events: 500 to a batch, as before.
    const small = Array.from({ length: 600 }, (_, i) => ({ ...events[0]!, event_id: `s${i}`, reason: "x" }));
    expect(eventBatch(small)).toHaveLength(500);
  });
});

describe("a data folder that cannot be written", () => {
  /** A data folder whose writes fail (as on a full or read-only disk) until `heal`, and what was logged. */
  function brokenFolder() {
    const dir = dataDir();
    const logged: string[] = [];
    const log: Logger = (level, msg) => logged.push(`${level}: ${msg}`);
    const broken = ["state.json.tmp", "outbox.json.tmp"].map((f) => join(dir, f));
    for (const tmp of broken) mkdirSync(tmp);
    const heal = () => {
      for (const tmp of broken) rmSync(tmp, { recursive: true });
    };
    return { dir, log, logged, heal };
  }

  it("the outbox keeps events in memory, says so once, and writes them all at the next change once it can", () => {
    const f = brokenFolder();
    const box = EventOutbox.open(f.dir, { log: f.log });
    box.add(event("e1"));
    box.add(event("e2"));
    expect(box.size).toBe(2);
    expect(EventOutbox.open(f.dir, { log: silentLogger }).size).toBe(0);
    expect(f.logged).toEqual([
      "error: could not write outbox.json; going on from memory, writing it again at the next change",
    ]);
    f.heal();
    box.add(event("e3"));
    expect(EventOutbox.open(f.dir, { log: silentLogger }).size).toBe(3);
    expect(f.logged.at(-1)).toBe("info: outbox.json written again");
  });

  it("the state goes on in memory, says so once, and is written whole at the next change once it can", () => {
    const f = brokenFolder();
    const state = AgentState.open(f.dir, f.log);
    state.setIdentity("node-1", "us-west");
    state.updatePlacement("p1", { stop_reason: "cancel" });
    expect(state.placement("p1")).toEqual({ stop_reason: "cancel" });
    expect(AgentState.open(f.dir).nodeId).toBeUndefined();
    expect(f.logged).toHaveLength(1);
    f.heal();
    state.updatePlacement("p1", { finished: "exited" });
    const again = AgentState.open(f.dir);
    expect([again.nodeId, again.placement("p1")]).toEqual(["node-1", { stop_reason: "cancel", finished: "exited" }]);
    expect(f.logged.at(-1)).toBe("info: state.json written again");
  });
});

describe("a data file that cannot be read at start", () => {
  /** A data folder holding `name` cut short, as a write on a full disk left it, and what gets logged. */
  function cutFile(name: string, whole: unknown) {
    const dir = dataDir();
    const text = JSON.stringify(whole);
    writeFileSync(join(dir, name), text.slice(0, text.length / 2));
    const logged: string[] = [];
    const log: Logger = (level, msg) => logged.push(`${level}: ${msg}`);
    const setAside = () => readdirSync(dir).filter((f) => f.startsWith(`${name}.corrupt-`));
    return { dir, log, logged, setAside, cut: text.slice(0, text.length / 2) };
  }

  it("the outbox is set aside and the queue starts empty", () => {
    const f = cutFile("outbox.json", [event("e1"), event("e2")]);
    const box = EventOutbox.open(f.dir, { log: f.log });
    expect(box.size).toBe(0);
    expect(f.setAside()).toHaveLength(1);
    expect(readFileSync(join(f.dir, f.setAside()[0]!), "utf8")).toBe(f.cut);
    expect(f.logged).toEqual(["error: outbox.json cannot be read; set aside, starting without it"]);
    box.add(event("e3"));
    expect(EventOutbox.open(f.dir, { log: silentLogger }).has("e3")).toBe(true);
  });

  it("the state is set aside and starts empty, every cached image counting as private until shown public", () => {
    const f = cutFile("state.json", { version: 1, node_id: "node-1", placements: { p1: { finished: "exited" } } });
    const state = AgentState.open(f.dir, f.log);
    expect([state.nodeId, state.knownPlacements()]).toEqual([undefined, []]);
    expect(f.setAside()).toHaveLength(1);
    expect(readFileSync(join(f.dir, f.setAside()[0]!), "utf8")).toBe(f.cut);
    expect(f.logged).toEqual(["error: state.json cannot be read; set aside, starting without it"]);
    expect(existsSync(join(f.dir, "state.json"))).toBe(true); // written at once: a crash now forgets nothing

    // The records of images pulled with credentials went with the file: no cached image may start as public.
    const images = new PrivateImages(
      state,
      { imageId: async (ref) => ref },
      { now: () => 1, monotonic: () => 1, sleep: async () => {} },
      silentLogger,
    );
    expect([images.mayStart("sha256:a", ANONYMOUS), images.mayStart("sha256:a", "sha256:fp")]).toEqual([false, false]);
    // An anonymous pull that succeeds shows it public, for good.
    images.startPull("app:1", ANONYMOUS).succeeded("sha256:a");
    expect(images.mayStart("sha256:a", ANONYMOUS)).toBe(true);
    const again = AgentState.open(f.dir);
    expect([again.imageRecord("sha256:a"), again.imageRecord("sha256:b")?.fingerprints]).toEqual([undefined, []]);
    // A fresh data folder has no such past.
    expect(AgentState.open(dataDir()).imageRecord("sha256:b")).toBeUndefined();
  });
});
