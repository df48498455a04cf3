/**
 * GPU device requests through the engine. The gpu engine has the stand-in NVIDIA hook on its PATH
 * (tools/docker/fake-gpu), as a GPU host has the real one; the plain engine has none, as a node
 * whose NVIDIA runtime is missing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { has } from "../tools/test/parts";
import { LABELS } from "./container-spec";
import { TestControlPlane } from "./test/control-plane";
import {
  freshImage,
  labelled,
  placement,
  plainEngineSocket,
  shell,
  startTestAgent,
  type TestAgent,
  untagImage,
} from "./test/harness";

describe.skipIf(!has("docker") || !has("registry"))("GPU placements", () => {
  let cp: TestControlPlane;
  let image: string;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    cp = await TestControlPlane.start();
    image = await freshImage();
  });

  afterAll(async () => {
    for (const a of agents) await a.stop();
    await cp?.close();
    if (image) await untagImage(image);
  });

  it("passes the placement's exact GPU indices to the container as an NVIDIA device request", async () => {
    const t = await startTestAgent(cp);
    agents.push(t);
    const p = placement({
      image,
      gpu_indices: [5, 2],
      env: [{ name: "NVIDIA_VISIBLE_DEVICES", value: "all" }],
      ...shell('echo "gpus=$NVIDIA_VISIBLE_DEVICES caps=$NVIDIA_DRIVER_CAPABILITIES"; sleep 600'),
    });
    cp.setPlacements([p]);
    const line = await cp.waitFor("the GPU line", () => cp.linesFor(p.placement_id).at(0));
    // The job's own NVIDIA_VISIBLE_DEVICES=all is dropped: the device request decides.
    expect(line.line).toBe("gpus=2,5 caps=compute,utility");
    const running = cp.eventsFor(p.placement_id).find((e) => e.type === "running");
    const details = await t.engine.inspect(running?.type === "running" ? running.container_id! : "");
    expect(details?.gpuDeviceIds).toEqual(["2", "5"]);
    expect(details?.env).not.toContain("NVIDIA_VISIBLE_DEVICES=all");
    cp.setPlacements([{ ...p, desired: "stopped" }]);
    expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", stopped_by: "cancel" });
  });

  it("fails the placement with a clear reason, and leaves no container, on an engine without the NVIDIA runtime", async () => {
    const plain = await TestControlPlane.start();
    const t = await startTestAgent(plain, { socket: plainEngineSocket() });
    agents.push(t);
    try {
      const p = placement({ image, gpu_indices: [0, 1, 2, 3], ...shell("echo should not run") });
      plain.setPlacements([p]);
      const outcome = await plain.outcome(p.placement_id);
      expect(outcome).toMatchObject({ type: "failed" });
      expect(outcome.type === "failed" && outcome.reason).toMatch(
        /^GPU request failed: no NVIDIA container runtime on this node for GPUs 0,1,2,3 \(could not select device driver "nvidia"/,
      );
      expect(plain.eventsFor(p.placement_id).some((e) => e.type === "running")).toBe(false);
      const left = (await labelled(t.engine, t.config.agentName)).filter(
        (c) => c.labels[LABELS.placement] === p.placement_id,
      );
      expect(left).toEqual([]);
      // The same engine runs placements without GPUs.
      const cpuOnly = placement({ image, ...shell("echo fine") });
      plain.setPlacements([p, cpuOnly]);
      expect(await plain.outcome(cpuOnly.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
    } finally {
      await plain.close();
    }
  });
});
