/** The test peer itself, and the agent's client against it: the route table, auth, validation, long-poll, outage. */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AGENT_ROUTES } from "../../core/schemas";
import { ControlPlaneClient, ControlPlaneError } from "../control-plane";
import { TestControlPlane } from "./control-plane";

const inventory = {
  hostname: "h",
  agent_version: "0.1.0",
  gpu_model: "H100" as const,
  gpus: [{ index: 0 }],
  cpu_milli: 2000,
  memory_mib: 4096,
};
const placement = {
  placement_id: "p1",
  job_id: "j1",
  attempt: 1,
  image: "127.0.0.1:5000/test/busybox:1",
  gpu_indices: [0],
  cpu_milli: 100,
  memory_mib: 64,
  kill_deadline: null,
  desired: "running" as const,
};

describe("test control plane", () => {
  let cp: TestControlPlane;
  let client: ControlPlaneClient;
  beforeEach(async () => {
    cp = await TestControlPlane.start({ pollWaitMs: 1_000 });
    client = new ControlPlaneClient(cp.url, cp.token, 5_000);
  });
  afterEach(() => cp.close());

  it("registers, answers the long-poll at once when the set changed and when it changes", async () => {
    expect(await client.register(inventory)).toMatchObject({ node_id: cp.nodeId, poll_wait_ms: 1_000 });
    expect(await client.placements(0, 1_000)).toEqual({ version: 0, placements: [] });
    const waiting = client.placements(0, 30_000);
    cp.setPlacements([placement]);
    const set = await waiting;
    expect(set.version).toBe(1);
    expect(set.placements[0]).toMatchObject({ placement_id: "p1", grace_period_ms: 10_000, command: [] });
  });

  it("de-duplicates events by id and log lines by seq", async () => {
    const e = { event_id: "p1/running", placement_id: "p1", at: 1, type: "running" as const };
    expect(await client.events({ events: [e] })).toEqual({ accepted: 1, duplicates: 0 });
    expect(await client.events({ events: [e] })).toEqual({ accepted: 0, duplicates: 1 });
    const l = { placement_id: "p1", seq: 0, stream: "stderr" as const, at: 1, line: "x" };
    expect(await client.logs({ lines: [l, l] })).toEqual({ accepted: 1 });
    expect(cp.linesFor("p1", "stderr")).toEqual([l]);
  });

  it("refuses a wrong token and a body that breaks the schema with the error envelope (rejected)", async () => {
    const wrong = new ControlPlaneClient(cp.url, "nope");
    await expect(wrong.register(inventory)).rejects.toMatchObject({ kind: "rejected", status: 401 });
    const res = await fetch(`${cp.url}${AGENT_ROUTES.heartbeat}`, {
      method: "POST",
      headers: { authorization: `Bearer ${cp.token}`, "content-type": "application/json" },
      body: JSON.stringify({ at: -1, gpus: [] }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "invalid_request", request_id: expect.any(String) } });
  });

  it("answers a placement's registry credentials; the id is URL-encoded; unknown_placement once it is not active", async () => {
    const odd = { ...placement, placement_id: "p/1 ?#%", image: "ghcr.io/org/app:1" };
    cp.setPlacements([placement, odd]);
    expect(await client.registryAuth("p1")).toEqual({ registry: "127.0.0.1:5000", credentials: null });
    cp.registryCredentials.set("ghcr.io", { username: "u", password: "pw" });
    expect(await client.registryAuth(odd.placement_id)).toEqual({
      registry: "ghcr.io",
      credentials: { username: "u", password: "pw" },
    });
    expect(cp.registryAuthRequests).toEqual(["p1", odd.placement_id]);

    cp.setPlacements([{ ...placement, desired: "stopped" }]);
    for (const id of ["p1", "nope"]) {
      const error = await client.registryAuth(id).catch((e) => e);
      expect(error).toBeInstanceOf(ControlPlaneError);
      expect(error).toMatchObject({
        kind: "rejected",
        status: 404,
        code: "unknown_placement",
        message: expect.stringMatching(/registry-auth: 404 unknown_placement: placement .* is not active/),
      });
    }
    cp.registryAuthError = { status: 503, code: "secrets_unavailable", message: "cannot open" };
    await expect(client.registryAuth("p1")).rejects.toMatchObject({
      kind: "unreachable",
      status: 503,
      code: "secrets_unavailable",
    });
  });

  it("refuses connections while down and comes back on the same port (unreachable)", async () => {
    await cp.goDown();
    const error = await client.register(inventory).catch((e) => e);
    expect(error).toBeInstanceOf(ControlPlaneError);
    expect(error).toMatchObject({ kind: "unreachable", message: expect.stringContaining("ECONNREFUSED") });
    await cp.comeBack();
    expect(await client.register(inventory)).toMatchObject({ node_id: cp.nodeId });
  });
});
