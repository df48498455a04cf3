/**
 * The agent on an engine whose containers run until stopped (test/live-engine.ts), against the test
 * control plane: logs that outlive a cut stream, containers started for placements that left
 * meanwhile, stops that fail, the engine's hiccups, orphans in heartbeats, a wall clock stepped
 * back, and a data folder that cannot be written.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Placement } from "../core/schemas";
import type { Agent, AgentConfig, AgentDeps } from "./agent";
import { type Clock, systemClock } from "./clock";
import { containerSpec } from "./container-spec";
import { EngineError } from "./docker/engine";
import type { Logger } from "./logger";
import { TestControlPlane } from "./test/control-plane";
import { startUnitAgent, placement as testPlacement } from "./test/harness";
import { LiveEngine } from "./test/live-engine";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A unit agent (named `unit`) on this engine, its data folder and control plane new. */
async function agentOn(
  engine: LiveEngine,
  config: Partial<AgentConfig> = {},
  deps: Partial<AgentDeps> = {},
  pollWaitMs = 1_000,
): Promise<{ cp: TestControlPlane; agent: Agent; dataDir: string }> {
  const cp = await TestControlPlane.start({ heartbeatIntervalMs: 100, pollWaitMs });
  cleanups.push(() => cp.close());
  const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-live-"));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const agent = await startUnitAgent(cp, engine, { dataDir, config, deps });
  cleanups.push(() => agent.stop());
  return { cp, agent, dataDir };
}

const job = (id: string) =>
  testPlacement({ placement_id: id, job_id: `job-${id}`, image: "r/app:1", grace_period_ms: 100 });

/** Polls `check` every 20 ms until it holds; gives up after 10 s. */
async function until(what: string, check: () => unknown): Promise<void> {
  const giveUp = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > giveUp) throw new Error(`gave up waiting for ${what}`);
    await sleep(20);
  }
}

/** The container of a placement, once running, and followed. */
async function runningContainer(engine: LiveEngine, cp: TestControlPlane, placementId: string): Promise<string> {
  await cp.waitFor("running", () => cp.eventsFor(placementId).find((e) => e.type === "running"));
  await until("a running container", () => engine.running().length > 0);
  const id = engine.running()[0]!;
  await until("a log follow", () => engine.calls.includes("followLogs"));
  return id;
}

describe("container logs", () => {
  it("follows the log again, from the acknowledged line, when the engine cuts the stream while the container runs", async () => {
    const engine = new LiveEngine();
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-logs")]);
    const id = await runningContainer(engine, cp, "p-logs");
    engine.writeLog(id, "before");
    await cp.waitFor("the line before", () => cp.linesFor("p-logs").length === 1);

    // As `systemctl restart docker` with live-restore does: the container runs on.
    engine.cutLogs(id);
    engine.writeLog(id, "after the cut");
    engine.writeLog(id, "and more", "stderr");
    await cp.waitFor("the lines after", () => cp.linesFor("p-logs").length === 3);
    engine.exit(id, 0);
    expect(await cp.outcome("p-logs")).toMatchObject({ type: "exited", exit_code: 0 });
    expect(cp.linesFor("p-logs").map((l) => [l.seq, l.stream, l.line])).toEqual([
      [0, "stdout", "before"],
      [1, "stdout", "after the cut"],
      [2, "stderr", "and more"],
    ]);
  });

  it("reads the rest of the log when the stream is cut just before the container exits", async () => {
    const engine = new LiveEngine();
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-last")]);
    const id = await runningContainer(engine, cp, "p-last");
    engine.writeLog(id, "working");
    await cp.waitFor("the first line", () => cp.linesFor("p-last").length === 1);
    // The engine restarts and the container exits a moment later, its last words in between.
    engine.cutLogs(id);
    engine.writeLog(id, "last words");
    engine.exit(id, 0);
    expect(await cp.outcome("p-last")).toMatchObject({ type: "exited", exit_code: 0 });
    await cp.waitFor("the last line", () => cp.linesFor("p-last").length === 2);
    expect(cp.linesFor("p-last").map((l) => [l.seq, l.line])).toEqual([
      [0, "working"],
      [1, "last words"],
    ]);
  });

  it("numbers the lines on where they stopped when the stream is cut while lines wait for the control plane", async () => {
    const engine = new LiveEngine();
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-backlog")]);
    const id = await runningContainer(engine, cp, "p-backlog");
    await cp.goDown();
    engine.writeLog(id, "one");
    engine.writeLog(id, "two");
    await sleep(200); // queued, not acknowledged
    engine.cutLogs(id);
    engine.writeLog(id, "three");
    await sleep(300);
    await cp.comeBack();
    await cp.waitFor("three lines", () => cp.linesFor("p-backlog").length === 3);
    engine.exit(id, 0);
    await cp.outcome("p-backlog");
    expect(cp.linesFor("p-backlog").map((l) => [l.seq, l.line])).toEqual([
      [0, "one"],
      [1, "two"],
      [2, "three"],
    ]);
  });

  it("reports the exit after a silence when the engine never ends the exited container's log stream, the lines read shipped", async () => {
    const engine = new LiveEngine();
    engine.logsOutliveExit = true;
    const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
    const { cp } = await agentOn(
      engine,
      { logSilenceAfterExitMs: 500 },
      { log: (level, msg, fields) => logged.push({ level, msg, fields }) },
    );
    cp.setPlacements([job("p-open-log")]);
    const id = await runningContainer(engine, cp, "p-open-log");
    engine.writeLog(id, "working");
    engine.writeLog(id, "last words", "stderr");
    const exitedAt = performance.now();
    engine.exit(id, 3);
    expect(await cp.outcome("p-open-log")).toMatchObject({ type: "exited", exit_code: 3 });
    expect(performance.now() - exitedAt).toBeGreaterThanOrEqual(500);
    await cp.waitFor("the lines", () => cp.linesFor("p-open-log").length === 2);
    expect(cp.linesFor("p-open-log").map((l) => [l.seq, l.stream, l.line])).toEqual([
      [0, "stdout", "working"],
      [1, "stderr", "last words"],
    ]);
    expect(logged).toContainEqual({
      level: "warn",
      msg: "the stopped container's log stream went silent without ending; giving up on the rest",
      fields: { placement_id: "p-open-log", silence_ms: 500 },
    });
  });

  it("tries again to open the log of a running container when the engine fails to", async () => {
    const engine = new LiveEngine();
    engine.failNext("followLogs", 2);
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-open")]);
    await cp.waitFor("running", () => cp.eventsFor("p-open").find((e) => e.type === "running"));
    await until("a running container", () => engine.running().length > 0);
    const id = engine.running()[0]!;
    engine.writeLog(id, "hello");
    await cp.waitFor("the line", () => cp.linesFor("p-open").length === 1);
    expect(engine.calls.filter((c) => c === "followLogs").length).toBe(3);
  });
});

describe("a placement that leaves the node while its container is being started", () => {
  it("stops and removes the container once the start returns, reporting nothing", async () => {
    const engine = new LiveEngine();
    engine.hung.add("start");
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-starting")]);
    await until("the start", () => engine.heldCalls().includes("start"));
    // The reconcile lists the container `created` and retires it.
    cp.setPlacements([]);
    await sleep(300);
    engine.hung.clear();
    engine.release("start");
    await until("the container gone", () => engine.containerCount === 0);
    expect(engine.calls).toContain("stop");
    expect(cp.eventsFor("p-starting").filter((e) => e.type !== "pulling")).toEqual([]);
  });
});

describe("retiring an orphan whose stop fails", () => {
  it("stops it again until it is gone (a run's container)", async () => {
    const engine = new LiveEngine();
    const { cp } = await agentOn(engine, { orphanGraceMs: 0 });
    cp.setPlacements([job("p-orphan")]);
    await runningContainer(engine, cp, "p-orphan");
    engine.failNext(
      "stop",
      2,
      () => new EngineError("engine", "tried to kill container, but did not receive an exit event"),
    );
    cp.setPlacements([]); // e.g. the node was marked lost and its runs ended
    await until("the container gone", () => engine.containerCount === 0);
    expect(engine.calls.filter((c) => c === "stop")).toHaveLength(3);
  });

  it("stops it again until it is gone (a container without a run, found after a restart)", async () => {
    const engine = new LiveEngine();
    const p = Placement.parse(job("p-left"));
    await engine.run(containerSpec(p, { agentName: "unit", nodeId: "n-old", pidsLimit: 64 }));
    engine.failNext("stop", 2);
    const { cp } = await agentOn(engine, { orphanGraceMs: 0 });
    cp.setPlacements([]);
    await until("the container gone", () => engine.containerCount === 0);
    expect(engine.calls.filter((c) => c === "stop")).toHaveLength(3);
  });
});

describe("a cancel while an orphan is being stopped", () => {
  it("stops the cancelled job's container at once, not after the orphan's stop", async () => {
    // The orphan's process ignores SIGTERM: its stop takes its whole grace.
    const slow = new Set<string>();
    const stops = new Map<string, number>();
    class SlowStops extends LiveEngine {
      override async stop(id?: string): Promise<void> {
        if (id && !stops.has(id)) stops.set(id, Date.now());
        if (id && slow.has(id)) await sleep(3_000);
        return super.stop(id);
      }
    }
    const engine = new SlowStops();
    const { cp } = await agentOn(engine, { orphanGraceMs: 0 });
    cp.setPlacements([{ ...job("p-orphan"), grace_period_ms: 5_000 }, job("p-cancelled")]);
    const containerOf = async (placementId: string) => {
      const running = await cp.waitFor("running", () => cp.eventsFor(placementId).find((e) => e.type === "running"));
      return (running as Extract<typeof running, { type: "running" }>).container_id!;
    };
    const orphan = await containerOf("p-orphan");
    const cancelled = await containerOf("p-cancelled");
    slow.add(orphan);
    // In one new set: the orphan's placement leaves (its run ended elsewhere), the other job is cancelled.
    cp.setPlacements([{ ...job("p-cancelled"), desired: "stopped" }]);
    await until("both stops asked", () => stops.has(orphan) && stops.has(cancelled));
    expect(stops.get(cancelled)! - stops.get(orphan)!).toBeLessThan(1_000);
    await until("the orphan stopped", () => !engine.running().includes(orphan));
  });
});

describe("an engine hiccup on an inspect", () => {
  it("after the start: the run goes on, and its exit is reported", async () => {
    const engine = new LiveEngine();
    // The first inspect is the one right after the start.
    engine.failNext("inspect");
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-start")]);
    await cp.waitFor("running", () => cp.eventsFor("p-start").find((e) => e.type === "running"));
    await until("the run supervising", () => engine.calls.includes("wait"));
    engine.exit(engine.running()[0]!, 0);
    expect(await cp.outcome("p-start")).toMatchObject({ type: "exited", exit_code: 0 });
  });

  it("after the exit: the exit (code 0) is reported, not a failure", async () => {
    const engine = new LiveEngine();
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-exit")]);
    const id = await runningContainer(engine, cp, "p-exit");
    await until("the run waiting for the exit", () => engine.calls.includes("wait"));
    // The second look at the exited container (after waitForExit's own) fails once.
    let looks = 0;
    engine.fault = (method, container) =>
      method === "inspect" && container === id && !engine.running().includes(id) && ++looks === 2
        ? new EngineError("engine", "connect ECONNREFUSED /var/run/docker.sock")
        : undefined;
    engine.exit(id, 0);
    expect(await cp.outcome("p-exit")).toMatchObject({ type: "exited", exit_code: 0 });
    expect(looks).toBeGreaterThanOrEqual(3);
  });
});

describe("heartbeats", () => {
  it("list running containers of ours that have no run (orphans), so a lost node does not come back onto busy GPUs", async () => {
    const engine = new LiveEngine();
    const p = Placement.parse(job("p-orphaned"));
    await engine.run(containerSpec(p, { agentName: "unit", nodeId: "n-old", pidsLimit: 64 }));
    const { cp } = await agentOn(engine); // orphan grace: 60 s
    cp.setPlacements([]);
    await cp.waitFor("3 heartbeats", () => cp.heartbeats.length >= 3);
    expect(cp.heartbeats.map((h) => h.running)).toEqual(cp.heartbeats.map(() => ["p-orphaned"]));
  });

  it("list a placement whose container is still being started, so its GPUs are not given away meanwhile", async () => {
    const engine = new LiveEngine();
    engine.hung.add("start");
    const { cp } = await agentOn(engine);
    cp.setPlacements([job("p-slow-start")]);
    await until("the start", () => engine.heldCalls().includes("start"));
    const from = cp.heartbeats.length;
    await cp.waitFor("2 heartbeats during the start", () => cp.heartbeats.length >= from + 2);
    const beats = cp.heartbeats.slice(from, from + 2);
    expect(beats.map((h) => h.running)).toEqual([["p-slow-start"], ["p-slow-start"]]);
    engine.hung.clear();
    engine.release("start");
    await cp.waitFor("running", () => cp.eventsFor("p-slow-start").find((e) => e.type === "running"));
  });
});

describe("heartbeats after a restart", () => {
  it("list the placements started before until the engine's containers have been listed once", async () => {
    const engine = new LiveEngine();
    const { cp, agent, dataDir } = await agentOn(engine);
    cp.setPlacements([job("p-before")]);
    await runningContainer(engine, cp, "p-before");
    await agent.stop(); // the container runs on
    // The restarted process's listings of the engine hang (a slow engine): it cannot see what runs.
    engine.hung.add("list");
    const from = cp.heartbeats.length;
    const second = await startUnitAgent(cp, engine, { dataDir });
    cleanups.push(async () => {
      engine.hung.clear();
      engine.release();
      await second.stop();
    });
    await cp.waitFor("2 heartbeats of the new process", () => cp.heartbeats.length >= from + 2);
    expect(cp.heartbeats.slice(from, from + 2).map((h) => h.running)).toEqual([["p-before"], ["p-before"]]);
  });
});

describe("after the wall clock is stepped an hour back", () => {
  /** The system clock, but `stepBack` sets its wall clock an hour back (NTP, a resumed VM): no time passes. */
  function steppedClock() {
    let step = 0;
    const clock: Clock = { ...systemClock, now: () => Date.now() + step };
    return {
      clock,
      stepBack: () => {
        step -= 3_600_000;
      },
    };
  }

  it("heartbeats list the engine again after half an interval", async () => {
    const engine = new LiveEngine();
    const id = await engine.run(
      containerSpec(Placement.parse(job("p-orphaned")), { agentName: "unit", nodeId: "n-old", pidsLimit: 64 }),
    );
    const { clock, stepBack } = steppedClock();
    // Reconciles an hour apart, placement polls 30 s long: after the first, only heartbeats list the engine.
    const { cp } = await agentOn(engine, { reconcileIntervalMs: 3_600_000 }, { clock }, 30_000);
    cp.setPlacements([]);
    await cp.waitFor("a heartbeat listing the orphan", () => cp.heartbeats.at(-1)?.running.includes("p-orphaned"));
    stepBack();
    engine.exit(id, 137);
    await cp.waitFor("a heartbeat without it", () => cp.heartbeats.at(-1)?.running.length === 0, 5_000);
  });

  it("an orphan is stopped once its grace has passed", async () => {
    const engine = new LiveEngine();
    const spec = (id: string) =>
      containerSpec(Placement.parse(job(id)), { agentName: "unit", nodeId: "n-old", pidsLimit: 64 });
    await engine.run(spec("p-orphan"));
    // A finished container: retired by the same reconcile that first sees the orphan.
    engine.exit(await engine.run(spec("p-done")), 0);
    const retired: unknown[] = [];
    const log: Logger = (_level, msg, fields) => {
      if (msg === "retiring container") retired.push(fields?.placement_id);
    };
    const { clock, stepBack } = steppedClock();
    const { cp } = await agentOn(engine, { orphanGraceMs: 1_000 }, { clock, log });
    cp.setPlacements([]);
    await until("the finished container retired", () => retired.includes("p-done"));
    stepBack();
    await until("the orphan retired", () => retired.includes("p-orphan"));
  });

  it("the log says how long the engine was down, and how long it was stuck, as the time that passed", async () => {
    const engine = new LiveEngine();
    engine.pingError = new Error("connect ENOENT /var/run/docker.sock");
    const logged: Record<string, Record<string, unknown> | undefined> = {};
    const log: Logger = (_level, msg, fields) => {
      logged[msg] = fields;
    };
    const { clock, stepBack } = steppedClock();
    const cp = await TestControlPlane.start({ heartbeatIntervalMs: 100 });
    cleanups.push(() => cp.close());
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-live-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const starting = startUnitAgent(cp, engine, { dataDir, config: { engineTimeoutMs: 300 }, deps: { clock, log } });
    cleanups.push(async () => {
      engine.pingError = null;
      engine.hung.clear();
      engine.release();
      await (await starting).stop();
    });
    await cp.waitFor("a registration", () => cp.registrations.length === 1);
    stepBack();
    engine.pingError = null;
    await until("the engine answering", () => logged["container engine answers"]);
    expect(logged["container engine answers"]?.down_ms).toBeGreaterThanOrEqual(0);

    engine.hung.add("list");
    await until(
      "the engine stuck",
      () => logged["container engine stuck: a call went unanswered past the engine timeout"],
    );
    stepBack();
    engine.hung.clear();
    engine.release();
    await until("the engine answering again", () => logged["container engine answers again"]);
    expect(logged["container engine answers again"]?.stuck_ms).toBeGreaterThanOrEqual(0);
  });
});

describe("a data folder that cannot be written", () => {
  it("keeps running placements and reporting from memory, and writes the files again once it can", async () => {
    const engine = new LiveEngine();
    const { cp, dataDir } = await agentOn(engine);
    const onDisk = () => JSON.parse(readFileSync(join(dataDir, "state.json"), "utf8"));
    await until("the state file", () => existsSync(join(dataDir, "state.json")) && onDisk().placement_set);
    // Writes fail from now on (as on a full or read-only disk): the temp files cannot be opened.
    mkdirSync(join(dataDir, "state.json.tmp"));
    mkdirSync(join(dataDir, "outbox.json.tmp"));
    cp.setPlacements([job("p-disk")]);
    const id = await runningContainer(engine, cp, "p-disk");
    engine.writeLog(id, "a line");
    await cp.waitFor("the line", () => cp.linesFor("p-disk").length === 1);
    engine.exit(id, 3);
    expect(await cp.outcome("p-disk")).toMatchObject({ type: "exited", exit_code: 3 });
    expect(onDisk().placements?.["p-disk"]).toBeUndefined();

    rmSync(join(dataDir, "state.json.tmp"), { recursive: true });
    rmSync(join(dataDir, "outbox.json.tmp"), { recursive: true });
    cp.setPlacements([job("p-disk-2")]);
    await until("the state written again", () => onDisk().placement_set?.placements?.[0]?.placement_id === "p-disk-2");
  });
});
