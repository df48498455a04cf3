/**
 * The node's state as the control plane answers heartbeats with it: the agent logs each change once
 * (an operator's cordon, a drain, back to ready), so its log says why no new work arrives.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Placement } from "../core/schemas";
import type { Logger } from "./logger";
import { AgentState } from "./state";
import { TestControlPlane } from "./test/control-plane";
import { FakeEngine } from "./test/fake-engine";
import { placement, startUnitAgent } from "./test/harness";

describe("the node's state in heartbeat answers", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("logs each change once: nothing while ready, a warning when cordoned or draining, info when ready again", async () => {
    const cp = await TestControlPlane.start({ heartbeatIntervalMs: 50 });
    cleanups.push(() => cp.close());
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-state-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const lines: { level: string; msg: string; fields: Record<string, unknown> | undefined }[] = [];
    const log: Logger = (level, msg, fields) => lines.push({ level, msg, fields });
    const agent = await startUnitAgent(cp, new FakeEngine(), { dataDir, deps: { log } });
    cleanups.push(() => agent.stop());
    const said = () => lines.filter((l) => l.msg.startsWith("control plane: this node is now"));
    const beats = async (n: number) => {
      const until = cp.heartbeats.length + n;
      await cp.waitFor(`${n} more heartbeats`, () => cp.heartbeats.length >= until);
    };

    await beats(3);
    expect(said()).toEqual([]);
    cp.nodeState = "cordoned";
    await beats(3);
    cp.nodeState = "draining";
    await beats(3);
    cp.nodeState = "ready";
    await beats(3);
    expect(said().map((l) => [l.level, l.msg, l.fields?.was])).toEqual([
      ["warn", "control plane: this node is now cordoned", "ready"],
      ["warn", "control plane: this node is now draining", "cordoned"],
      ["info", "control plane: this node is now ready", "draining"],
    ]);
  });

  it("registers while its container engine does not answer, reporting it (the node is cordoned), and takes work once it does", async () => {
    const cp = await TestControlPlane.start({ heartbeatIntervalMs: 50 });
    cleanups.push(() => cp.close());
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-state-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const engine = new FakeEngine();
    engine.pingError = new Error("connect ENOENT /var/run/docker.sock");
    const lines: { level: string; msg: string }[] = [];
    const starting = startUnitAgent(cp, engine, { dataDir, deps: { log: (level, msg) => lines.push({ level, msg }) } });
    // Agent.start returns once the engine answers: let it, if the test failed before it did.
    cleanups.push(async () => {
      engine.pingError = null;
      await (await starting).stop();
    });

    await cp.waitFor("a registration", () => cp.registrations.length === 1);
    expect(cp.registrations[0]!.engine_stuck).toMatchObject({
      operation: "ping",
      detail: "the container engine is not reachable: connect ENOENT /var/run/docker.sock",
    });
    const since = cp.registrations[0]!.engine_stuck!.since;
    await cp.waitFor("heartbeats saying so", () => cp.heartbeats.filter((h) => h.engine_stuck).length >= 3);
    expect(cp.heartbeats.every((h) => h.engine_stuck?.since === since)).toBe(true);
    // No placements are asked for while the engine cannot run them.
    expect(cp.placementPolls).toBe(0);
    // A control plane that forgot the node (heartbeats answered `unknown`) hears from it again.
    cp.forgetNode = true;
    await cp.waitFor("a registration again", () => cp.registrations.length === 2);
    expect(cp.registrations[1]!.engine_stuck).toMatchObject({ operation: "ping", since });

    engine.pingError = null;
    await starting;
    await cp.waitFor("a heartbeat without engine_stuck", () => cp.heartbeats.at(-1)?.engine_stuck === undefined);
    await cp.waitFor("a placement poll", () => cp.placementPolls > 0);
    expect(cp.registrations).toHaveLength(2);
    expect(lines.some((l) => l.level === "info" && l.msg === "container engine answers")).toBe(true);
  });

  it("after a restart, starts nothing from the saved set until the control plane has sent its own", async () => {
    const cp = await TestControlPlane.start({ heartbeatIntervalMs: 50 });
    cleanups.push(() => cp.close());
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-state-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    // Saved before the restart: the node's identity and a set with a placement not started yet.
    const saved = AgentState.open(dataDir);
    saved.setIdentity(cp.nodeId, "test-1");
    saved.setPlacementSet({ version: 7, placements: [Placement.parse(placement({ image: "busybox" }))] });
    // Meanwhile the node was lost and its work placed elsewhere: the control plane's set is empty,
    // and it cannot be asked at first.
    cp.placementsDown = true;
    const engine = new FakeEngine();
    const agent = await startUnitAgent(cp, engine, { dataDir });
    cleanups.push(() => agent.stop());
    await cp.waitFor("a few refused polls and heartbeats", () => cp.placementPolls >= 3 && cp.heartbeats.length >= 3);
    await new Promise((go) => setTimeout(go, 300)); // reconciles every 100 ms
    // Not started: no registry credentials asked for it, nothing pulled or created.
    const started = () => [...cp.registryAuthRequests, ...engine.calls.filter((c) => c === "create" || c === "pull")];
    expect(started()).toEqual([]);
    cp.placementsDown = false;
    const polls = cp.placementPolls;
    await cp.waitFor("the set", () => cp.placementPolls > polls + 1);
    await new Promise((go) => setTimeout(go, 300));
    expect(started()).toEqual([]);
  });

  it("with placements to adopt (a restart), waits for the engine before registering", async () => {
    const cp = await TestControlPlane.start({ heartbeatIntervalMs: 50 });
    cleanups.push(() => cp.close());
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-state-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    // A first process that ran a placement (the fake's containers exit at once; the set stays).
    cp.setPlacements([placement({ image: "busybox" })]);
    const ran = new FakeEngine();
    const first = await startUnitAgent(cp, ran, { dataDir });
    await cp.waitFor("the placement's container", () => ran.calls.includes("start"));
    await first.stop();

    const engine = new FakeEngine();
    engine.pingError = new Error("connect ENOENT /var/run/docker.sock");
    const starting = startUnitAgent(cp, engine, { dataDir });
    // Agent.start returns once the engine answers: let it, if the test failed before it did.
    cleanups.push(async () => {
      engine.pingError = null;
      await (await starting).stop();
    });
    // The control plane hears nothing: wait on the engine's calls instead.
    while (engine.calls.filter((c) => c === "ping").length < 3) await new Promise((go) => setTimeout(go, 20));
    expect(cp.registrations).toHaveLength(1);
    engine.pingError = null;
    await starting;
    await cp.waitFor("a second registration", () => cp.registrations.length === 2);
    expect(cp.registrations[1]!.engine_stuck).toBeUndefined();
  });
});
