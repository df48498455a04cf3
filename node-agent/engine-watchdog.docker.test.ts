/**
 * The engine watchdog against the real Docker engine: a container whose start hangs in the engine
 * (the stand-in NVIDIA hook sleeps for a container that asks it to, as the `libnetwork-setkey` hook
 * of a deadlocked docker.io 20.10 never returned) fails its placement, retryable, and the heartbeats
 * say the engine is stuck until the start has come back; the container that started late is removed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { has } from "../tools/test/parts";
import { LABELS } from "./container-spec";
import { TestControlPlane } from "./test/control-plane";
import { labelled, placement, shell, startTestAgent, type TestAgent, testImage } from "./test/harness";

const HOOK_SLEEP_S = 6;

// Skips only outside CI when the engine or registry is missing: under CI=true `has()` is true, so a
// missing part fails the run instead.
describe.skipIf(!has("docker") || !has("registry"))("engine watchdog on a real Docker engine", () => {
  let cp: TestControlPlane;
  let t: TestAgent;

  beforeAll(async () => {
    cp = await TestControlPlane.start({ heartbeatIntervalMs: 500 });
    t = await startTestAgent(cp, { config: { engineTimeoutMs: 1_500, orphanGraceMs: 1_000 } });
    await cp.waitFor("registration", () => cp.registrations.length > 0);
  });

  afterAll(async () => {
    await t?.stop();
    await cp?.close();
  });

  it("fails a placement whose start hangs, reports the engine stuck until the start returns, then removes the late container", async () => {
    const p = placement({
      image: testImage(),
      gpu_indices: [0],
      env: [{ name: "SCALAR_TEST_HOOK_SLEEP_S", value: String(HOOK_SLEEP_S) }],
      ...shell("sleep 600"),
    });
    const submitted = Date.now();
    cp.upsertPlacement(p);

    const outcome = await cp.outcome(p.placement_id);
    expect(outcome).toMatchObject({
      type: "failed",
      reason: expect.stringMatching(
        /^container start timed out: the container engine did not answer "start" within 1\.5 s; the node is cordoned until its engine answers$/,
      ),
    });
    expect(outcome).not.toHaveProperty("retryable");
    expect(cp.eventsFor(p.placement_id).map((e) => e.type)).not.toContain("running");

    const stuckBeat = await cp.waitFor("a heartbeat with engine_stuck", () =>
      cp.heartbeats.find((h) => h.engine_stuck !== undefined),
    );
    expect(stuckBeat.engine_stuck).toMatchObject({ operation: "start" });
    expect(stuckBeat.engine_stuck!.since).toBeGreaterThanOrEqual(submitted - 1_000);

    // The scheduler drops a failed placement from the desired set.
    cp.removePlacement(p.placement_id);
    // The hook returns, the start completes: the engine answers again, and nothing of it is left.
    const stuckAt = cp.heartbeats.indexOf(stuckBeat);
    await cp.waitFor(
      "a heartbeat without engine_stuck",
      () => cp.heartbeats.slice(stuckAt + 1).some((h) => h.engine_stuck === undefined),
      (HOOK_SLEEP_S + 20) * 1_000,
    );
    await expect
      .poll(
        async () =>
          (await labelled(t.engine, t.config.agentName)).some((c) => c.labels[LABELS.placement] === p.placement_id),
        { timeout: 30_000, interval: 250 },
      )
      .toBe(false);
    expect(cp.eventsFor(p.placement_id).map((e) => e.type)).toEqual(["failed"]);
  });

  it("runs the next placement normally once the engine answers", async () => {
    const p = placement({ image: testImage(), gpu_indices: [0], ...shell("echo fine") });
    cp.upsertPlacement(p);
    expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
  });
});
