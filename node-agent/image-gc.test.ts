/**
 * Image garbage collection (image-gc.ts) on the fake engine, with a stand-in disk whose usage is a
 * base plus the sizes of the images the engine has: thresholds, order, what is kept and why, the
 * engine's refusals, names, private image records; then the agent collecting on its interval and
 * right after a pull fails for lack of space.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Agent } from "./agent";
import { type Clock, systemClock } from "./clock";
import { EngineError } from "./docker/engine";
import type { DiskUsage } from "./host";
import {
  DEFAULT_IMAGE_GC,
  IMAGE_USE_PERSIST_MS,
  ImageGc,
  type ImageGcConfig,
  ImageUse,
  isNoSpace,
  MAX_IMAGE_USE_RECORDS,
} from "./image-gc";
import type { Logger } from "./logger";
import { PrivateImages } from "./private-images";
import { AgentState } from "./state";
import { TestControlPlane } from "./test/control-plane";
import { FakeEngine } from "./test/fake-engine";
import { startUnitAgent } from "./test/harness";

const GB = 1_000_000_000;
const DAY = 86_400_000;
const MIN = 60_000;
const T0 = Date.parse("2026-11-20T12:00:00Z");

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Polls until `check` returns something (log lines are not control-plane changes to wait for). */
async function eventually<T>(check: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const giveUp = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > giveUp) throw new Error("gave up waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "scalar-gc-"));
  dirs.push(dir);
  return dir;
}

interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** The disk: 100 GB; `base` GB used besides images, plus every image the engine still has. */
function fakeDisk(engine: FakeEngine, opts: { base: number; readable?: (path: string) => boolean }) {
  const reads: string[] = [];
  const disk = {
    base: opts.base,
    reads,
    usedBytes(): number {
      const ids = new Set([...engine.images.values(), ...engine.danglingImages]);
      let images = 0;
      for (const id of ids) images += engine.imageMeta.get(id)?.sizeBytes ?? 0;
      return disk.base * GB + images;
    },
    async read(path: string): Promise<DiskUsage | undefined> {
      reads.push(path);
      if (opts.readable && !opts.readable(path)) return undefined;
      return { totalBytes: 100 * GB, availableBytes: 100 * GB - disk.usedBytes() };
    },
  };
  return disk;
}

function setup(
  opts: {
    base?: number;
    config?: Partial<ImageGcConfig>;
    desired?: string[] | null;
    readable?: (path: string) => boolean;
  } = {},
) {
  const dataDir = tempDir();
  const engine = new FakeEngine();
  let now = T0;
  /** How far the wall clock has been stepped away from the monotonic one (`stepWall`). */
  let stepped = 0;
  const clock: Clock = {
    now: () => now + stepped,
    monotonic: () => now,
    sleep: (_ms, signal) => systemClock.sleep(0, signal),
  };
  const logs: LogLine[] = [];
  const log: Logger = (level, msg, fields) => logs.push({ level, msg, ...fields });
  const state = AgentState.open(dataDir);
  const images = new PrivateImages(state, engine, clock, log);
  const use = new ImageUse(state, clock);
  const disk = fakeDisk(engine, { base: opts.base ?? 70, ...(opts.readable ? { readable: opts.readable } : {}) });
  let desired: string[] | null = opts.desired === undefined ? [] : opts.desired;
  const gc = new ImageGc(
    { ...DEFAULT_IMAGE_GC, ...opts.config },
    {
      engine,
      use,
      privateImages: images,
      clock,
      log,
      dataDir,
      protectedRefs: () => desired,
      readDisk: (path) => disk.read(path),
    },
  );
  return {
    dataDir,
    engine,
    state,
    images,
    use,
    disk,
    gc,
    logs,
    clock: {
      set: (t: number) => {
        now = t;
      },
      advance: (ms: number) => {
        now += ms;
      },
      /** Steps the wall clock alone, as NTP or a resumed VM does: no time passes. */
      stepWall: (ms: number) => {
        stepped += ms;
      },
    },
    setDesired: (refs: string[] | null) => {
      desired = refs;
    },
    /** An image, `ageDays` old (build time), `gb` in size. */
    image(id: string, names: string[], gb: number, ageDays = 30) {
      engine.addImage(id, names, { sizeBytes: gb * GB, created: T0 - ageDays * DAY });
    },
    /** This agent pulled or started from the image `agoMs` before now. */
    used(id: string, agoMs: number) {
      const at = now;
      now = at - agoMs;
      use.touch(id);
      now = at;
    },
    has: (id: string) => [...engine.images.values(), ...engine.danglingImages].includes(id),
    messages: (level?: string) => logs.filter((l) => !level || l.level === level).map((l) => l.msg),
  };
}

describe("image GC: thresholds and order", () => {
  it("removes nothing, and lists nothing, below the high threshold", async () => {
    const n = setup({ base: 70 });
    n.image("sha256:a", ["r/a:1"], 5);
    n.image("sha256:b", ["r/b:1"], 5); // 80 %
    const result = await n.gc.pass("interval");
    expect(result).toMatchObject({
      usageBefore: 80,
      removed: [],
      measured: { path: "/var/lib/docker", engineDisk: true },
    });
    expect(n.engine.calls).not.toContain("listImages");
    expect(n.engine.imageRemovals).toEqual([]);
    expect(n.messages("info")).toEqual([]);
  });

  it("removes least recently used images first until usage is at the low threshold: unrecorded ones by build time, then by last use", async () => {
    const n = setup({ base: 75 });
    n.image("sha256:old-build", ["r/old:1"], 3, 10);
    n.image("sha256:newer-build", ["r/newer:1"], 3, 5);
    n.image("sha256:used-1h", ["r/used1h:1"], 3, 40); // built long ago, but this agent used it
    n.image("sha256:used-30m", ["r/used30m:1"], 3, 50);
    n.used("sha256:used-1h", 60 * MIN);
    n.used("sha256:used-30m", 30 * MIN); // 87 %

    const result = await n.gc.pass("interval");
    expect(result.removed.map((i) => i.id)).toEqual(["sha256:old-build", "sha256:newer-build", "sha256:used-1h"]);
    expect(result.usageBefore).toBe(87);
    expect(result.usageAfter).toBe(78);
    expect(n.has("sha256:used-30m")).toBe(true);
    // Removed by id, never forced (the fake has no force at all), and reading usage after each.
    expect(n.engine.imageRemovals).toEqual(["sha256:old-build", "sha256:newer-build", "sha256:used-1h"]);
    expect(n.disk.reads).toHaveLength(4);

    const line = n.logs.find((l) => l.msg === "image gc removed images");
    expect(line).toMatchObject({
      level: "info",
      trigger: "interval",
      path: "/var/lib/docker",
      images_removed: 3,
      bytes_freed: 9 * GB,
      image_bytes: 9 * GB,
      usage_before_pct: 87,
      usage_after_pct: 78,
      high_pct: 85,
      low_pct: 80,
    });
    expect(line?.images).toEqual([
      expect.objectContaining({ id: "sha256:old-build", tags: ["r/old:1"] }),
      expect.objectContaining({ id: "sha256:newer-build" }),
      expect.objectContaining({ id: "sha256:used-1h" }),
    ]);
    expect(n.messages("warn")).toEqual([]);
    // The removed images' use records go with them.
    expect(Object.keys(n.state.imageUse())).toEqual(["sha256:used-30m"]);
  });

  it("collects from exactly the high threshold, and is off at 100 %", async () => {
    const n = setup({ base: 80 });
    n.image("sha256:a", ["r/a:1"], 5); // 85 %
    expect((await n.gc.pass("interval")).removed).toHaveLength(1);

    const off = setup({ base: 99, config: { highPercent: 100 } });
    off.image("sha256:a", ["r/a:1"], 1);
    expect(off.gc.enabled).toBe(false);
    await off.gc.request("no_space");
    expect(off.engine.calls).toEqual([]);
  });
});

describe("image GC: what is kept", () => {
  it("never removes an image a container uses, running or stopped, ours or not, and warns when nothing more may go", async () => {
    const n = setup({ base: 80 });
    n.image("sha256:running", ["r/running:1"], 3);
    n.image("sha256:stopped", ["r/stopped:1"], 3);
    n.image("sha256:ours", ["r/ours:1"], 3);
    n.image("sha256:unused", ["r/unused:1"], 3); // 92 %
    n.engine.addForeignContainer("sha256:running", "running");
    n.engine.addForeignContainer("sha256:stopped", "exited");
    const id = await n.engine.create({
      name: "scalar-p1",
      image: "r/ours:1",
      env: [],
      labels: { "io.scalar.managed": "true" },
      memoryBytes: 0,
      nanoCpus: 0,
      pidsLimit: 0,
      gpuDeviceIds: [],
    });
    await n.engine.start(id); // exits at once: a stopped container of ours

    const result = await n.gc.pass("interval");
    expect(result.removed.map((i) => i.id)).toEqual(["sha256:unused"]);
    expect(result.kept).toMatchObject({ in_use: 3 });
    expect(n.engine.imageRemovals).toEqual(["sha256:unused"]);
    expect(
      n.logs.find((l) => l.msg === "image gc: disk still above the high threshold; no more images may go"),
    ).toMatchObject({
      level: "warn",
      usage_after_pct: 89,
      images_removed: 1,
      kept_in_use: 3,
    });
  });

  it("keeps the images of the desired set (and of runs in progress), by the id a reference names or by name", async () => {
    const n = setup({ base: 80, desired: ["r/app:1", "r/by-name@sha256:d1", "r/missing:9"] });
    n.image("sha256:app", ["r/app:1", "r/app:latest"], 3);
    n.image("sha256:by-name", ["r/by-name:2", "r/by-name@sha256:d1"], 3);
    n.image("sha256:other", ["r/other:1"], 3); // 89 %
    const result = await n.gc.pass("interval");
    expect(result.removed.map((i) => i.id)).toEqual(["sha256:other"]);
    expect(result.kept.desired).toBe(2);
    expect(n.has("sha256:app") && n.has("sha256:by-name")).toBe(true);
  });

  it("waits for the node's first desired set before removing anything", async () => {
    const n = setup({ base: 90, desired: null });
    n.image("sha256:a", ["r/a:1"], 3);
    expect((await n.gc.pass("no_space")).removed).toEqual([]);
    expect(n.engine.calls).toEqual([]);
    n.setDesired([]);
    expect((await n.gc.pass("no_space")).removed).toHaveLength(1);
  });

  it("keeps an image this agent pulled or started from within the minimum age, and one that appeared since its last listing", async () => {
    const n = setup({ base: 85 });
    n.image("sha256:just-pulled", ["r/just:1"], 1);
    n.image("sha256:used-3m", ["r/used3m:1"], 1);
    n.used("sha256:just-pulled", 60_000);
    n.used("sha256:used-3m", 3 * MIN);
    const first = await n.gc.pass("interval"); // 87 %: everything eligible goes
    expect(first.removed.map((i) => i.id)).toEqual(["sha256:used-3m"]);
    expect(first.kept.recent).toBe(1);

    // Someone else pulls an image (no record here) after this agent's first listing.
    n.image("sha256:foreign-new", ["r/foreign:1"], 1, 400);
    n.clock.advance(30_000);
    const second = await n.gc.pass("interval");
    expect(second.removed).toEqual([]);
    expect(second.kept.recent).toBe(2);

    n.clock.advance(2 * MIN);
    const third = await n.gc.pass("interval");
    expect(third.removed.map((i) => i.id)).toEqual(["sha256:foreign-new", "sha256:just-pulled"]);
  });

  // NTP or a resumed VM steps the wall clock by an hour just after the image appeared.
  it.each([
    ["forward", 60 * MIN],
    ["back", -60 * MIN],
  ])(
    "times the min age of an image new since the last listing on the monotonic clock when the wall clock is stepped %s",
    async (_, step) => {
      const n = setup({ base: 85 });
      await n.gc.pass("interval"); // the first listing
      n.image("sha256:foreign-new", ["r/foreign:1"], 1); // 86 %
      expect((await n.gc.pass("interval")).kept.recent).toBe(1);
      n.clock.stepWall(step);
      n.clock.advance(DEFAULT_IMAGE_GC.minAgeMs - 1);
      expect((await n.gc.pass("interval")).kept.recent).toBe(1);
      n.clock.advance(1);
      expect((await n.gc.pass("interval")).removed.map((i) => i.id)).toEqual(["sha256:foreign-new"]);
    },
  );
});

describe("image GC: the engine's answers", () => {
  it("skips an image the engine refuses (409) or no longer has (404), and goes on after any other error", async () => {
    const n = setup({ base: 82 });
    n.image("sha256:conflict", ["r/conflict:1"], 2, 40);
    n.image("sha256:gone", ["r/gone:1"], 2, 39);
    n.image("sha256:broken", ["r/broken:1"], 2, 38);
    n.image("sha256:fine", ["r/fine:1"], 2, 37); // 90 %, 86 % once "gone" and "fine" are
    n.engine.removeImageError = (ref) => {
      if (ref === "sha256:conflict") {
        return new EngineError(
          "conflict",
          "conflict: unable to delete 1a2b (cannot be forced) - image is being used by running container 9f8e",
          409,
        );
      }
      if (ref === "sha256:gone") {
        n.engine.images.delete("r/gone:1"); // removed by someone else meanwhile
        return new EngineError("not_found", "No such image: sha256:gone", 404);
      }
      if (ref === "sha256:broken") return new EngineError("engine", "layer store: driver failed", 500);
      return undefined;
    };
    const result = await n.gc.pass("interval");
    expect(result.removed.map((i) => i.id)).toEqual(["sha256:fine"]);
    expect(result.kept).toMatchObject({ in_use: 1, failed: 1 });
    expect(n.engine.imageRemovals).toEqual(["sha256:conflict", "sha256:gone", "sha256:broken", "sha256:fine"]);
    expect(n.messages("warn")).toEqual([
      "image gc could not remove an image",
      "image gc: disk still above the high threshold; no more images may go",
    ]);
    expect(n.logs.find((l) => l.msg === "image gc could not remove an image")).toMatchObject({
      id: "sha256:broken",
      error: "layer store: driver failed",
    });
  });

  it("removes an image with several names name by name, without force, so that all of it goes", async () => {
    const n = setup({ base: 82 });
    n.image("sha256:multi", ["r/a:1", "r/a:2", "other/b:1", "r/a@sha256:d1"], 5); // 87 %
    const result = await n.gc.pass("interval");
    expect(result.removed.map((i) => i.id)).toEqual(["sha256:multi"]);
    expect(n.has("sha256:multi")).toBe(false);
    expect(n.engine.imageRemovals).toEqual([
      "sha256:multi", // 409: referenced in multiple repositories
      "r/a:1",
      "r/a:2",
      "other/b:1",
      "r/a@sha256:d1", // the last name takes the image with it
      "sha256:multi", // 404: gone
    ]);
  });

  it("leaves every name of a several-names image that a container started from meanwhile", async () => {
    const n = setup({ base: 82 });
    n.image("sha256:multi", ["r/a:1", "r/a:2"], 5);
    n.engine.removeImageError = (ref) => {
      if (ref === "sha256:multi" && n.engine.containerCount === 0) n.engine.addForeignContainer("sha256:multi");
      return undefined;
    };
    const result = await n.gc.pass("interval");
    expect(result.removed).toEqual([]);
    expect(result.kept.in_use).toBe(1);
    expect(n.engine.imageRemovals).toEqual(["sha256:multi"]);
    expect(n.engine.images.get("r/a:1")).toBe("sha256:multi");
    expect(n.engine.images.get("r/a:2")).toBe("sha256:multi");
  });

  it("drops the private image records of the images it removed, and only those", async () => {
    const n = setup({ base: 80 });
    n.image("sha256:private-unused", ["reg.example.com/org/a:1"], 4);
    n.image("sha256:private-used", ["reg.example.com/org/b:1"], 4); // 88 %
    n.engine.addForeignContainer("sha256:private-used", "running");
    const record = { ref: "reg.example.com/org/a:1", fingerprints: ["sha256:f"], at: T0 - DAY };
    n.state.setImageRecord("sha256:private-unused", record);
    n.state.setImageRecord("sha256:private-used", { ...record, ref: "reg.example.com/org/b:1" });
    const result = await n.gc.pass("interval");
    expect(result.removed.map((i) => i.id)).toEqual(["sha256:private-unused"]);
    expect(n.state.imageRecordIds()).toEqual(["sha256:private-used"]);
  });
});

describe("image GC: where it measures", () => {
  it("measures the agent's data folder when the engine's data root cannot be read, says so once, and stops once the images' sizes cover the excess", async () => {
    const n = setup({ base: 0, readable: (path) => path !== "/var/lib/docker" });
    // The data folder's disk does not change when images go: the sizes are all there is to go by.
    n.disk.usedBytes = () => 90 * GB;
    for (let i = 0; i < 5; i++) n.image(`sha256:i${i}`, [`r/i${i}:1`], 4, 50 - i);
    const first = await n.gc.pass("interval");
    expect(first.measured).toEqual({ path: n.dataDir, engineDisk: false });
    expect(first.removed.map((i) => i.id)).toEqual(["sha256:i0", "sha256:i1", "sha256:i2"]); // 12 GB ≥ 10 GB
    await n.gc.pass("interval");
    const said = n.logs.filter(
      (l) => l.msg === "image gc cannot read the engine's data root; measuring the agent's data folder instead",
    );
    expect(said).toEqual([
      expect.objectContaining({ level: "warn", docker_root_dir: "/var/lib/docker", data_dir: n.dataDir }),
    ]);
    expect(n.logs.find((l) => l.msg === "image gc removed images")).toMatchObject({ measured: "data folder" });
  });

  it("measures the data folder when the engine does not say where its data is", async () => {
    const n = setup({ base: 70 });
    n.engine.dataRootDir = null;
    const result = await n.gc.pass("interval");
    expect(result.measured).toEqual({ path: n.dataDir, engineDisk: false });
    expect(n.disk.reads).toEqual([n.dataDir]);
  });
});

describe("image use records", () => {
  it("are kept in the state file, written at most once a minute per image, and bounded", () => {
    const dataDir = tempDir();
    let now = T0;
    const clock: Clock = { now: () => now, monotonic: () => now, sleep: async () => {} };
    const state = AgentState.open(dataDir);
    const use = new ImageUse(state, clock);
    use.touch("sha256:a");
    now += 10_000;
    use.touch("sha256:a");
    expect(use.lastUsed("sha256:a")).toBe(T0 + 10_000);
    expect(AgentState.open(dataDir).imageUse()).toEqual({ "sha256:a": T0 });
    now = T0 + IMAGE_USE_PERSIST_MS;
    use.touch("sha256:a");
    expect(AgentState.open(dataDir).imageUse()).toEqual({ "sha256:a": now });

    // A restarted agent starts from the file; beyond the bound the least recently used goes.
    const again = new ImageUse(AgentState.open(dataDir), clock, 20);
    expect(again.lastUsed("sha256:a")).toBe(now);
    for (let i = 0; i < 20; i++) {
      now += 1;
      again.touch(`sha256:n${i}`);
    }
    expect(again.lastUsed("sha256:a")).toBeUndefined();
    const onDisk = AgentState.open(dataDir).imageUse();
    expect(Object.keys(onDisk)).toHaveLength(20);
    expect(MAX_IMAGE_USE_RECORDS).toBe(500);
    expect(onDisk).not.toHaveProperty("sha256:a");
  });

  it("tells a lack of space from other failures", () => {
    expect(
      isNoSpace(new EngineError("engine", "write /var/lib/docker/tmp/GetImageBlob1: no space left on device")),
    ).toBe(true);
    expect(isNoSpace(new Error("ENOSPC: no space left on device, write"))).toBe(true);
    expect(isNoSpace(new EngineError("image_not_found", "manifest unknown"))).toBe(false);
  });
});

describe("the agent's image GC", () => {
  const started: { agent: Agent; cp: TestControlPlane }[] = [];
  afterEach(async () => {
    for (const { agent, cp } of started.splice(0)) {
      await agent.stop();
      await cp.close();
    }
  });

  async function startAgent(engine: FakeEngine, disk: ReturnType<typeof fakeDisk>, gc: Partial<ImageGcConfig>) {
    const cp = await TestControlPlane.start({ pollWaitMs: 1_000, heartbeatIntervalMs: 60_000 });
    const logs: LogLine[] = [];
    const agent = await startUnitAgent(cp, engine, {
      dataDir: tempDir(),
      config: { imageGc: { ...DEFAULT_IMAGE_GC, ...gc } },
      deps: {
        log: (level, msg, fields) => logs.push({ level, msg, ...fields }),
        diskUsage: (path) => disk.read(path),
      },
    });
    started.push({ agent, cp });
    return { agent, cp, logs };
  }

  const placement = (id: string, image: string) => ({
    placement_id: id,
    job_id: `job-${id}`,
    attempt: 1,
    image,
    gpu_indices: [],
    cpu_milli: 100,
    memory_mib: 64,
    kill_deadline: null,
    desired: "running" as const,
  });

  it("collects right after a pull fails for lack of space, keeping the desired set's images and recording the ones it starts from", async () => {
    const engine = new FakeEngine();
    const disk = fakeDisk(engine, { base: 80 });
    engine.addImage("sha256:old", ["r/old:1"], { sizeBytes: 4 * GB, created: Date.now() - 30 * DAY });
    engine.addImage("sha256:ok", ["r/ok:1"], { sizeBytes: 4 * GB, created: Date.now() - 30 * DAY }); // 88 %
    engine.registry = (ref) => {
      throw new EngineError("engine", `write /var/lib/docker/tmp/${ref}: no space left on device`);
    };
    // A long interval: only the failed pull can start this pass.
    const { agent, cp, logs } = await startAgent(engine, disk, { intervalMs: 3_600_000 });
    cp.setPlacements([placement("p-ok", "r/ok:1"), placement("p-new", "r/new:1")]);

    expect(await cp.outcome("p-new")).toMatchObject({
      type: "failed",
      reason: expect.stringContaining("no space left on device"),
    });
    const line = await eventually(() => logs.find((l) => l.msg === "image gc removed images"));
    expect(line).toMatchObject({ trigger: "no_space", images_removed: 1, usage_before_pct: 88, usage_after_pct: 84 });
    expect(engine.images.has("r/old:1")).toBe(false);
    expect(engine.images.get("r/ok:1")).toBe("sha256:ok");
    expect(engine.imageRemovals).toEqual(["sha256:old"]);
    // p-ok started from the cached image: recorded, in memory and in the state file.
    expect(agent.imageUse.lastUsed("sha256:ok")).toBeGreaterThan(0);
    expect(agent.state.imageUse()).toHaveProperty("sha256:ok");
  });

  it("collects on its interval", async () => {
    const engine = new FakeEngine();
    const disk = fakeDisk(engine, { base: 84 });
    engine.addImage("sha256:old", ["r/old:1"], { sizeBytes: 2 * GB, created: Date.now() - DAY }); // 86 %
    const { cp, logs } = await startAgent(engine, disk, { intervalMs: 50 });
    cp.setPlacements([]);
    const line = await eventually(() => logs.find((l) => l.msg === "image gc removed images"));
    expect(line).toMatchObject({ trigger: "interval", images_removed: 1, usage_after_pct: 84 });
  });
});
