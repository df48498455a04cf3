/**
 * Image GC against the real Docker engine (`npm run docker:up`): the engine's data root, its
 * listing, its refusals and the name-by-name removal of an image with several names. The engine is
 * shared with other tests (and the shared test image must stay): this test makes images of its own
 * (copies of the test image committed with a label unique to the run, so each has its own id) and
 * lets GC consider only those.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { has } from "../tools/test/parts";
import { systemClock } from "./clock";
import { DockerodeEngine } from "./docker/dockerode-engine";
import { type DiskUsage, diskUsage } from "./host";
import { DEFAULT_IMAGE_GC, ImageGc, ImageUse } from "./image-gc";
import type { Logger } from "./logger";
import { PrivateImages } from "./private-images";
import { AgentState } from "./state";
import { gpuEngineSocket, testImage } from "./test/harness";

const LABEL = "io.scalar.test.image-gc";

// Needs a Docker engine and the local registry: skipped only outside CI when they are missing (`npm test`
// says which); under CI=true `has()` is true, so a missing part fails the test (tools/test/parts.ts).
describe.skipIf(!has("docker") || !has("registry"))("image GC on a real Docker engine", () => {
  const run = randomBytes(6).toString("hex");
  const repo = `scalar-test-gc-${run}`;
  let engine: DockerodeEngine;
  let dataDir: string;
  const images: string[] = [];
  const containers: string[] = [];

  beforeAll(async () => {
    engine = new DockerodeEngine({ socketPath: gpuEngineSocket() });
    dataDir = mkdtempSync(join(tmpdir(), "scalar-gc-docker-"));
    // Other test files pull the shared image when it is missing; so does this one, and never removes it.
    if (!(await engine.hasImage(testImage()))) await engine.pull(testImage(), () => {});
  });

  afterAll(async () => {
    for (const id of containers) await engine?.remove(id).catch(() => {});
    // Only this run's own images (their ids are unique to it), so force is safe here.
    for (const id of images) {
      await engine?.docker
        .getImage(id)
        .remove({ force: true })
        .catch(() => {});
    }
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  /** A copy of the test image with its own id, under these names (`repo:tag`, all in this run's repositories). */
  async function ownImage(names: string[]): Promise<string> {
    const c = await engine.docker.createContainer({ Image: testImage(), Cmd: ["true"] });
    try {
      const [first, ...rest] = names.map((n) => n.split(":") as [string, string]);
      const made = (await c.commit({
        repo: first![0],
        tag: first![1],
        changes: `LABEL ${LABEL}=${run}`,
        pause: false,
      })) as { Id: string };
      images.push(made.Id);
      for (const [r, tag] of rest) await engine.docker.getImage(made.Id).tag({ repo: r, tag });
      return made.Id;
    } finally {
      await c.remove({ force: true });
    }
  }

  /** A container from the image: running `sleep`, or created and never started (stopped). */
  async function containerFrom(image: string, running: boolean): Promise<string> {
    const c = await engine.docker.createContainer({
      Image: image,
      Cmd: ["sleep", "600"],
      Labels: { [LABEL]: run },
      HostConfig: { Init: true },
    });
    containers.push(c.id);
    if (running) await c.start();
    return c.id;
  }

  const present = async (ref: string) => (await engine.imageId(ref)) !== null;

  it("removes an unused image of its own, all its names, and keeps the images containers use and the shared test image", async () => {
    const unused = await ownImage([`${repo}/unused:1`, `${repo}/unused:2`, `${repo}-other/unused:1`]);
    const runningImage = await ownImage([`${repo}/running:1`]);
    const stoppedImage = await ownImage([`${repo}/stopped:1`]);
    // Recorded as used (just now, but the minimum age is 0 here): goes after the unrecorded one, so never, at 70 %.
    const recorded = await ownImage([`${repo}/recorded:1`]);
    await containerFrom(runningImage, true);
    await containerFrom(stoppedImage, false);

    const root = await engine.dataRoot();
    expect(root).toMatch(/^\//);
    // The agent sees the engine's data root here (engines of `npm run docker:up` run on this machine).
    expect(await diskUsage(root!)).toMatchObject({ totalBytes: expect.any(Number) });

    // 90 % until something is removed, 70 % after.
    const reads: string[] = [];
    const readDisk = async (path: string): Promise<DiskUsage> => {
      reads.push(path);
      const pct = (await present(unused)) ? 90 : 70;
      return { totalBytes: 100_000_000_000, availableBytes: (100 - pct) * 1_000_000_000 };
    };
    const logs: { level: string; msg: string; [k: string]: unknown }[] = [];
    const log: Logger = (level, msg, fields) => logs.push({ level, msg, ...fields });
    const state = AgentState.open(dataDir);
    state.setImageRecord(unused, { ref: `${repo}/unused:1`, fingerprints: [], at: Date.now() });
    const privateImages = new PrivateImages(state, engine, systemClock, log);
    const use = new ImageUse(state, systemClock);
    use.touch(recorded);
    const gc = new ImageGc(
      { ...DEFAULT_IMAGE_GC, minAgeMs: 0 },
      {
        engine,
        use,
        privateImages,
        clock: systemClock,
        log,
        dataDir,
        protectedRefs: () => [testImage()],
        readDisk,
        // Only this run's images: other tests' images on this engine are never candidates.
        mayCollect: (image) => image.labels[LABEL] === run,
      },
    );

    const result = await gc.pass("interval");
    expect(result.measured).toEqual({ path: root, engineDisk: true });
    expect(reads.every((p) => p === root)).toBe(true);
    expect(result.usageBefore).toBe(90);
    expect(result.usageAfter).toBe(70);
    expect(result.removed.map((i) => i.id)).toEqual([unused]);
    expect(result.kept.in_use).toBe(2);

    // All of it: every name, and the image itself.
    for (const name of [`${repo}/unused:1`, `${repo}/unused:2`, `${repo}-other/unused:1`]) {
      expect(await present(name)).toBe(false);
    }
    expect(await present(unused)).toBe(false);
    for (const kept of [runningImage, stoppedImage, recorded]) expect(await present(kept)).toBe(true);
    expect(await present(`${repo}/running:1`)).toBe(true);
    expect(await present(testImage())).toBe(true);
    // Its private record went with it.
    expect(state.imageRecord(unused)).toBeUndefined();
    expect(logs.find((l) => l.msg === "image gc removed images")).toMatchObject({
      images_removed: 1,
      usage_before_pct: 90,
      usage_after_pct: 70,
      images: [expect.objectContaining({ id: unused })],
    });
  });

  it("keeps an image a container uses when the engine is asked directly: 409, skipped", async () => {
    const image = await ownImage([`${repo}/busy:1`]);
    await containerFrom(image, true);
    await expect(engine.removeImage(image)).rejects.toMatchObject({ code: "conflict", status: 409 });
    await expect(engine.removeImage(`${repo}/busy:1`)).rejects.toMatchObject({ code: "conflict", status: 409 });
    await expect(engine.removeImage(`sha256:${"0".repeat(64)}`)).rejects.toMatchObject({
      code: "not_found",
      status: 404,
    });
    const listed = (await engine.listImages()).find((i) => i.id === image);
    expect(listed).toMatchObject({ tags: [`${repo}/busy:1`], labels: { [LABEL]: run } });
    expect(listed!.created).toBeGreaterThan(Date.parse("2020-01-01"));
    expect((await engine.containerImageIds()).has(image)).toBe(true);
    expect(await present(image)).toBe(true);
  });
});
