/**
 * The ingress in a real agent on the Docker engine, with the test control plane as its peer: a
 * replica (busybox httpd) is reported ready within a second of answering, not at the next
 * heartbeat, and requests reach it through the ingress with the node's key, only while it runs.
 */
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { INGRESS, type NodeInventory, type RegisterResponse } from "../core/schemas";
import { freePort } from "../tools/db/embedded";
import { has } from "../tools/test/parts";
import { Agent, type AgentConfig } from "./agent";
import { systemClock } from "./clock";
import { ControlPlaneClient } from "./control-plane";
import { DockerodeEngine } from "./docker/dockerode-engine";
import { DeclaredGpus } from "./gpu";
import { TestControlPlane } from "./test/control-plane";
import { gpuEngineSocket, placement, removeLabelled, shell, testAgentConfig, testImage } from "./test/harness";

const KEY = "ingress-key-".padEnd(48, "0123456789");

/** The test control plane hands out no ingress key; this adds one to its answers, as the Worker does. */
class KeyedClient extends ControlPlaneClient {
  override async register(inventory: NodeInventory): Promise<RegisterResponse> {
    return { ...(await super.register(inventory)), ingress_key: KEY };
  }
}

// Needs a Docker engine and the local registry: skipped only outside CI without them; with CI=true
// `has()` is true, so a missing engine fails the test (tools/test/parts.ts).
describe.skipIf(!has("docker") || !has("registry"))("the agent's ingress on a real Docker engine", () => {
  let cp: TestControlPlane;
  let agent: Agent;
  let engine: DockerodeEngine;
  let config: AgentConfig;
  let base: string;

  beforeAll(async () => {
    // Heartbeats a minute apart: within these tests only the first one and those brought forward happen.
    cp = await TestControlPlane.start({ heartbeatIntervalMs: 60_000 });
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    config = testAgentConfig({ ingress: { port, host: "127.0.0.1", url: base } });
    engine = new DockerodeEngine({ socketPath: gpuEngineSocket() });
    agent = await Agent.start(config, {
      engine,
      api: new KeyedClient(cp.url, cp.token),
      gpus: new DeclaredGpus(8, "H100"),
      host: { hostname: "test-host", cpuMilli: 2_000, memoryMib: 4_096, address: "10.9.8.7" },
      clock: systemClock,
      random: Math.random,
      log: () => {},
    });
    await cp.waitFor("the first heartbeat", () => cp.heartbeats.length > 0);
  });

  afterAll(async () => {
    await agent?.stop();
    if (engine && config) await removeLabelled(engine, config.agentName);
    if (config) rmSync(config.dataDir, { recursive: true, force: true });
    await cp?.close();
  });

  const through = (placementId: string, path: string, key: string | null = KEY) =>
    fetch(`${base}${INGRESS.path(placementId, path)}`, { headers: key ? { [INGRESS.keyHeader]: key } : {} });

  it("registers the ingress URL, reports a replica ready within seconds of running, and serves it through the ingress", async () => {
    expect(cp.registrations[0]).toMatchObject({ ingress_url: base });
    const replica = placement({
      image: testImage(),
      health_check: { port: 8080, path: "/ok" },
      ...shell("mkdir -p /www && echo ok > /www/ok && exec httpd -f -p 8080 -h /www"),
    });
    const plain = placement({ image: testImage(), ...shell("sleep 600") });
    cp.upsertPlacement(replica);
    cp.upsertPlacement(plain);
    const running = await cp.waitFor("the replica running", () =>
      cp.eventsFor(replica.placement_id).find((e) => e.type === "running"),
    );
    // The next heartbeat by the interval is a minute away: only the readiness watch sends this one.
    const beat = await cp.waitFor(
      "a heartbeat reporting the replica ready",
      () =>
        cp.heartbeats.find((h) =>
          h.containers.some((c) => c.placement_id === replica.placement_id && c.ready === true),
        ),
      10_000,
    );
    expect(beat.at - running.at).toBeLessThan(3_000);

    const ok = await through(replica.placement_id, "/ok?from=test");
    expect(ok.status).toBe(200);
    expect(ok.headers.get(INGRESS.errorHeader)).toBeNull();
    expect(await ok.text()).toBe("ok\n");

    for (const key of ["wrong", null]) {
      const refused = await through(replica.placement_id, "/ok", key);
      expect(refused.status).toBe(401);
      expect(refused.headers.get(INGRESS.errorHeader)).toBe("unauthorized");
      expect(await refused.json()).toMatchObject({ error: { code: "unauthorized" } });
    }

    // Not here, and running but not a replica (no readiness check, so no endpoint port): unknown.
    for (const id of ["p-not-on-this-node", plain.placement_id]) {
      const unknown = await through(id, "/ok");
      expect(unknown.status).toBe(404);
      expect(unknown.headers.get(INGRESS.errorHeader)).toBe("unknown_placement");
      expect(await unknown.json()).toMatchObject({ error: { code: "unknown_placement" } });
    }

    // The replica's own answers pass as they are.
    const missing = await through(replica.placement_id, "/nope");
    expect(missing.status).toBe(404);
    expect(missing.headers.get(INGRESS.errorHeader)).toBeNull();

    // Asked to stop: no more traffic, even during its grace period.
    for (const p of [replica, plain]) cp.upsertPlacement({ ...p, desired: "stopped" });
    await cp.outcome(replica.placement_id);
    const gone = await through(replica.placement_id, "/ok");
    expect([gone.status, gone.headers.get(INGRESS.errorHeader)]).toEqual([404, "unknown_placement"]);
    await cp.outcome(plain.placement_id);
  });

  it("stops the ingress with the agent", async () => {
    await agent.stop();
    await expect(through("p-any", "/")).rejects.toThrow();
  });
});
