/**
 * The engine watchdog on a fake engine whose calls can hang, with time driven by hand: deadlines,
 * the stuck report while a late call is pending and its end once it settles, and the calls without
 * a deadline. Then an agent on a hung engine against the test control plane: the placement fails,
 * retryable, and heartbeats carry `engine_stuck` until the engine answers again.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { EngineStuck } from "../core/schemas";
import type { Clock } from "./clock";
import { EngineError } from "./docker/engine";
import { EngineWatchdog, PullStalled } from "./engine-watchdog";
import type { Logger } from "./logger";
import { TestControlPlane } from "./test/control-plane";
import { FakeEngine } from "./test/fake-engine";
import { startUnitAgent } from "./test/harness";

/** Time that moves only when the test says so; sleeps end on its monotonic time, as the system clock's do. */
class ManualClock implements Clock {
  t = 1_700_000_000_000;
  /** How far the wall clock has been stepped away from the monotonic one (`stepWall`). */
  private stepped = 0;
  private timers: { at: number; done: () => void }[] = [];

  now(): number {
    return this.t + this.stepped;
  }

  monotonic(): number {
    return this.t;
  }

  /** Steps the wall clock alone, as NTP or a resumed VM does: no timer fires, no time passes. */
  stepWall(ms: number): void {
    this.stepped += ms;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((done) => {
      if (signal?.aborted) return done();
      const timer = { at: this.t + ms, done };
      this.timers.push(timer);
      signal?.addEventListener(
        "abort",
        () => {
          this.timers = this.timers.filter((t) => t !== timer);
          done();
        },
        { once: true },
      );
    });
  }

  /** Moves time on, fires the timers due, and lets what they wake run. */
  async advance(ms: number): Promise<void> {
    this.t += ms;
    const due = this.timers.filter((t) => t.at <= this.t);
    this.timers = this.timers.filter((t) => t.at > this.t);
    for (const t of due) t.done();
    await settle();
  }
}

const settle = () => new Promise((r) => setImmediate(r));

/** A promise's state without waiting for it. */
function track<T>(promise: Promise<T>) {
  const s: { done: boolean; value?: T; error?: unknown } = { done: false };
  promise.then(
    (value) => Object.assign(s, { done: true, value }),
    (error) => Object.assign(s, { done: true, error }),
  );
  return s;
}

const ID = "0123456789abcdef0123456789abcdef";

function setup() {
  const clock = new ManualClock();
  const engine = new FakeEngine();
  const changes: (EngineStuck | undefined)[] = [];
  const watchdog = new EngineWatchdog(engine, { timeoutMs: 60_000, clock, onChange: (s) => changes.push(s) });
  return { clock, engine, watchdog, changes };
}

describe("the engine watchdog", () => {
  it("rejects a call unanswered past its deadline with engine_timeout, and reports the engine stuck while it is pending", async () => {
    const { clock, engine, watchdog, changes } = setup();
    engine.hung.add("start");
    const t0 = clock.now();
    const start = track(watchdog.start(ID));
    await clock.advance(59_999);
    expect(start.done).toBe(false);
    expect(watchdog.stuck()).toBeUndefined();

    await clock.advance(1);
    expect(start.error).toBeInstanceOf(EngineError);
    expect(start.error).toMatchObject({
      code: "engine_timeout",
      message: 'the container engine did not answer "start" within 60 s',
    });
    const stuck = { since: t0, operation: "start", detail: ID.slice(0, 12) };
    expect(watchdog.stuck()).toEqual(stuck);
    expect(changes).toEqual([stuck]);

    // The call still hangs (it cannot be cancelled): still stuck, no news.
    await clock.advance(10 * 60_000);
    expect(watchdog.stuck()).toEqual(stuck);
    expect(engine.heldCalls()).toEqual(["start"]);
    expect(changes).toHaveLength(1);
  });

  it("stays stuck until every late call has settled, reporting the oldest, and clears by itself", async () => {
    const { clock, engine, watchdog, changes } = setup();
    engine.hung.add("start").add("remove");
    const t0 = clock.now();
    void watchdog.start(ID).catch(() => {});
    await clock.advance(10_000);
    void watchdog.remove(ID).catch(() => {});
    await clock.advance(60_000);
    expect(watchdog.stuck()).toMatchObject({ since: t0, operation: "start" });

    // The start answers late: the remove is still out.
    engine.release("start");
    await settle();
    expect(watchdog.stuck()).toMatchObject({ since: t0 + 10_000, operation: "remove" });
    expect(changes).toHaveLength(1);

    // The engine restarted: the remove fails with a connection error, which settles it too.
    engine.release("remove", new Error("connect ECONNREFUSED /var/run/docker.sock"));
    await settle();
    expect(watchdog.stuck()).toBeUndefined();
    expect(changes).toEqual([{ since: t0, operation: "start", detail: ID.slice(0, 12) }, undefined]);
  });

  it("marks nothing for calls answered in time, successes and failures alike", async () => {
    const { clock, engine, watchdog, changes } = setup();
    engine.hung.add("start").add("inspect");
    const start = track(watchdog.start(ID));
    const inspect = track(watchdog.inspect(ID));
    await clock.advance(59_000);
    engine.release("start");
    engine.release("inspect", new EngineError("engine", "500 boom"));
    await settle();
    expect(start.error).toMatchObject({ code: "not_found" }); // the fake has no such container
    expect(inspect.error).toMatchObject({ code: "engine", message: "500 boom" });
    await clock.advance(120_000);
    expect(watchdog.stuck()).toBeUndefined();
    expect(changes).toEqual([]);
  });

  it("gives a stop its grace period on top of the timeout", async () => {
    const { clock, engine, watchdog } = setup();
    engine.hung.add("stop");
    const stop = track(watchdog.stop(ID, 30_000));
    await clock.advance(60_000);
    expect(stop.done).toBe(false);
    await clock.advance(30_000);
    expect(stop.error).toMatchObject({
      code: "engine_timeout",
      message: 'the container engine did not answer "stop" within 90 s',
    });
  });

  it("puts no deadline on wait and followLogs, which are long by nature", async () => {
    const { clock, engine, watchdog, changes } = setup();
    engine.hung.add("wait").add("followLogs");
    const calls = [track(watchdog.wait(ID)), track(watchdog.followLogs(ID, null, () => {}))];
    await clock.advance(60 * 60_000);
    expect(calls.map((c) => c.done)).toEqual([false, false]);
    expect(watchdog.stuck()).toBeUndefined();
    expect(changes).toEqual([]);
    engine.release();
    await settle();
    // Answered after an hour: no error of the watchdog's.
    expect(calls.map((c) => [c.done, c.error])).toEqual([
      [true, undefined],
      [true, undefined],
    ]);
  });
});

/** The fake engine's pull replaced by one the test drives: progress events, then success or an error. */
function drivenPull(engine: FakeEngine) {
  const pulls: { ref: string; progress: (p: string) => void; finish: (error?: Error) => void }[] = [];
  engine.pull = (ref, onProgress) =>
    new Promise<void>((resolve, reject) => {
      pulls.push({ ref, progress: onProgress, finish: (error) => (error ? reject(error) : resolve()) });
    });
  return pulls;
}

describe("the engine watchdog on pulls", () => {
  it("fails a pull silent for 5 minutes with pull_stalled, without marking the engine stuck; the engine's pull goes on", async () => {
    const { clock, engine, watchdog, changes } = setup();
    const pulls = drivenPull(engine);
    const heard: string[] = [];
    const pull = track(watchdog.pull("r/app:1", (p) => heard.push(p)));
    await clock.advance(299_999);
    expect(pull.done).toBe(false);

    await clock.advance(1);
    expect(pull.error).toBeInstanceOf(PullStalled);
    expect(pull.error).toMatchObject({
      code: "pull_stalled",
      message: "image pull made no progress for 300 s",
      ref: "r/app:1",
      stallMs: 300_000,
    });
    // The registry or the network, not the engine: no stuck report, no cordon.
    expect(watchdog.stuck()).toBeUndefined();
    expect(changes).toEqual([]);

    // The engine's pull was not cancelled: it goes on, its progress goes nowhere, and its end is told.
    const outcome = track((pull.error as PullStalled).outcome);
    pulls[0]!.progress("Downloading 1 MB / 9 MB");
    await clock.advance(60 * 60_000);
    expect(heard).toEqual([]);
    expect(outcome.done).toBe(false);
    pulls[0]!.finish();
    await settle();
    expect(outcome.value).toEqual({ pulled: true });
    expect(watchdog.stuck()).toBeUndefined();
    expect(changes).toEqual([]);
  });

  it("tells how a stalled pull ended when the engine's pull fails later", async () => {
    const { clock, engine, watchdog } = setup();
    const pulls = drivenPull(engine);
    const pull = track(watchdog.pull("r/app:1", () => {}));
    await clock.advance(300_000);
    const outcome = track((pull.error as PullStalled).outcome);
    const error = new EngineError("registry_unreachable", "read tcp: connection reset by peer");
    pulls[0]!.finish(error);
    await settle();
    expect(outcome.value).toEqual({ pulled: false, error });
  });

  it("starts the stall time again at every progress event: a slow pull that keeps moving succeeds", async () => {
    const { clock, engine, watchdog, changes } = setup();
    const pulls = drivenPull(engine);
    const heard: string[] = [];
    const pull = track(watchdog.pull("r/app:1", (p) => heard.push(p)));
    // An hour of download, an event every 4 minutes 50 s: never 5 minutes of silence.
    for (let i = 0; i < 12; i++) {
      await clock.advance(290_000);
      pulls[0]!.progress(`Downloading ${i}`);
    }
    expect(pull.done).toBe(false);
    expect(heard).toHaveLength(12);
    pulls[0]!.finish();
    await settle();
    expect([pull.done, pull.error]).toEqual([true, undefined]);
    expect(changes).toEqual([]);
  });

  it("counts the silence from the last progress event", async () => {
    const { clock, engine, watchdog } = setup();
    const pulls = drivenPull(engine);
    const pull = track(watchdog.pull("r/app:1", () => {}));
    await clock.advance(200_000);
    pulls[0]!.progress("Extracting 10 MB / 900 MB");
    await clock.advance(299_999); // 499.999 s in: more than 300 s since the start, not since the event
    expect(pull.done).toBe(false);
    await clock.advance(1);
    expect(pull.error).toMatchObject({ code: "pull_stalled" });
  });

  // NTP or a resumed VM steps the wall clock by an hour just after a progress event.
  it.each([
    ["forward", 3_600_000],
    ["back", -3_600_000],
  ])("times the silence on the monotonic clock when the wall clock is stepped %s", async (_, step) => {
    const { clock, engine, watchdog } = setup();
    const pulls = drivenPull(engine);
    const pull = track(watchdog.pull("r/app:1", () => {}));
    await clock.advance(100_000);
    pulls[0]!.progress("Downloading 1 MB / 9 MB");
    clock.stepWall(step);
    await clock.advance(299_999);
    expect(pull.done).toBe(false);
    await clock.advance(1);
    expect(pull.error).toMatchObject({ code: "pull_stalled", message: "image pull made no progress for 300 s" });
  });

  it("takes its stall limit from pullStallMs", async () => {
    const clock = new ManualClock();
    const engine = new FakeEngine();
    drivenPull(engine);
    const watchdog = new EngineWatchdog(engine, { timeoutMs: 60_000, pullStallMs: 30_000, clock });
    expect(watchdog.pullStallMs).toBe(30_000);
    const pull = track(watchdog.pull("r/app:1", () => {}));
    await clock.advance(29_999);
    expect(pull.done).toBe(false);
    await clock.advance(1);
    expect(pull.error).toMatchObject({ code: "pull_stalled", message: "image pull made no progress for 30 s" });
  });

  it("leaves a pull that ends in time alone: its result, its progress and its own errors pass through", async () => {
    const { clock, engine, watchdog, changes } = setup();
    engine.registry = (ref) => {
      if (ref === "r/missing:1") throw new EngineError("image_not_found", "manifest unknown");
      return "sha256:app";
    };
    const heard: string[] = [];
    await expect(watchdog.pull("r/app:1", (p) => heard.push(p))).resolves.toBeUndefined();
    expect(heard).toEqual(["Pulling from r/app:1"]);
    expect(engine.images.get("r/app:1")).toBe("sha256:app");
    const missing = watchdog.pull("r/missing:1", () => {});
    await expect(missing).rejects.toMatchObject({ code: "image_not_found", message: "manifest unknown" });
    await expect(missing).rejects.not.toBeInstanceOf(PullStalled);
    // No timer left behind to fire later.
    await clock.advance(60 * 60_000);
    expect(watchdog.stuck()).toBeUndefined();
    expect(changes).toEqual([]);
  });
});

describe("an agent on a hung engine", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("fails the placement whose start hangs (retryable), reports engine_stuck at once, and clears it when the engine answers", async () => {
    // Heartbeats a minute apart: only the registration's, unless the agent brings one forward.
    const cp = await TestControlPlane.start({ heartbeatIntervalMs: 60_000, pollWaitMs: 1_000 });
    cleanups.push(() => cp.close());
    const engine = new FakeEngine();
    engine.images.set("r/app:1", "sha256:app");
    engine.hung.add("start").add("remove");
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-stuck-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const logs: { level: string; msg: string }[] = [];
    const log: Logger = (level, msg) => logs.push({ level, msg });
    const agent = await startUnitAgent(cp, engine, { dataDir, config: { engineTimeoutMs: 300 }, deps: { log } });
    cleanups.push(() => agent.stop());
    await cp.waitFor("the first heartbeat", () => cp.heartbeats.length > 0);
    expect(cp.heartbeats[0]!.engine_stuck).toBeUndefined();

    cp.setPlacements([
      {
        placement_id: "p-hung",
        job_id: "job-hung",
        attempt: 1,
        image: "r/app:1",
        gpu_indices: [0],
        cpu_milli: 100,
        memory_mib: 64,
        kill_deadline: null,
        desired: "running",
      },
    ]);
    const outcome = await cp.outcome("p-hung", 10_000);
    expect(outcome).toMatchObject({
      type: "failed",
      reason:
        'container start timed out: the container engine did not answer "start" within 0.3 s; the node is cordoned until its engine answers',
    });
    expect(outcome).not.toHaveProperty("retryable");
    const stuck = await cp.waitFor("a heartbeat with engine_stuck", () => cp.heartbeats.find((h) => h.engine_stuck));
    expect(stuck.engine_stuck).toMatchObject({ operation: "start" });
    expect(cp.eventsFor("p-hung").map((e) => e.type)).toEqual(["failed"]);

    // The engine is restarted: the hung calls fail with connection errors, and the engine answers.
    engine.hung.clear();
    engine.release(undefined, new Error("connect ECONNREFUSED /var/run/docker.sock"));
    const beats = cp.heartbeats.length;
    await cp.waitFor("a heartbeat without engine_stuck", () => cp.heartbeats.slice(beats).find((h) => !h.engine_stuck));
    expect(logs.filter((l) => l.msg.startsWith("container engine stuck"))).toMatchObject([{ level: "warn" }]);
    expect(logs.filter((l) => l.msg === "container engine answers again")).toMatchObject([{ level: "info" }]);

    // The container of the failed start goes once the placement has left the desired set.
    expect(engine.containerCount).toBe(1);
    cp.setPlacements([]);
    await cp.waitFor("the container removed", () => engine.containerCount === 0, 10_000);
    expect(cp.eventsFor("p-hung").map((e) => e.type)).toEqual(["failed"]);
  });
});
