/**
 * SF Compute's own Nodes SDK (`@sfcompute/nodes-sdk-alpha`, generated from their OpenAPI spec)
 * against the simulator: if the real client can drive it, the simulator's Nodes API has the real
 * paths, bodies and shapes.
 */
import SFCNodes, { APIError } from "@sfcompute/nodes-sdk-alpha";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOUR_MS, MINUTE_MS } from "./clock";
import { startTestSimulator, type TestSimulator } from "./testing";

let sim: TestSimulator;
let client: SFCNodes;
beforeAll(async () => {
  sim = await startTestSimulator({ bootSeconds: 300 });
  client = new SFCNodes({ baseURL: sim.url, bearerToken: sim.token, maxRetries: 0 });
});
afterAll(async () => {
  await sim?.close();
});

const endIn = (hours: number) => (Math.ceil(sim.now() / HOUR_MS) + hours) * 3600;

async function status(error: Promise<unknown>): Promise<number> {
  try {
    await error;
  } catch (e) {
    if (e instanceof APIError) return e.status as number;
    throw e;
  }
  return 0;
}

describe("the official Nodes SDK against the simulator", () => {
  it("creates, lists, gets, extends and deletes reserved nodes, and reads their VM's SSH details", async () => {
    const created = await client.nodes.create({
      desired_count: 2,
      max_price_per_node_hour: 4_000,
      zone: "hayesvalley",
      end_at: endIn(2),
      names: ["sdk-a", "sdk-b"],
      node_type: "reserved",
    });
    expect(created.object).toBe("list");
    expect(created.data.map((n) => [n.name, n.status, n.node_type, n.gpu_type])).toEqual([
      ["sdk-a", "pending", "reserved", "H100"],
      ["sdk-b", "pending", "reserved", "H100"],
    ]);
    sim.advance(6 * MINUTE_MS);
    const listed = await client.nodes.list({ name: ["sdk-a", "sdk-b"] });
    expect(listed.data.map((n) => n.status)).toEqual(["running", "running"]);
    const a = await client.nodes.get("sdk-a");
    expect(a.id).toMatch(/^n_[0-9a-f]{16}$/);
    expect(a.current_vm?.status).toBe("Running");
    expect((await client.nodes.get(a.id)).name).toBe("sdk-a");
    expect((await client.nodes.list({ id: [a.id] })).data).toHaveLength(1);

    const ssh = await client.vms.ssh({ vm_id: a.current_vm!.id });
    expect(ssh.ssh_hostname).toBe(`${a.current_vm!.id}.vms.sfcompute.dev`);
    expect(ssh.ssh_port).toBe(22);
    expect(ssh.ssh_host_keys?.[0]?.key_type).toBe("ssh-ed25519");

    const extended = await client.nodes.extend(a.id, { duration_seconds: 3600, max_price_per_node_hour: 4_000 });
    expect(extended.end_at).toBe(a.end_at! + 3600);

    expect(await status(client.nodes.delete(a.id))).toBe(409); // its VM is running
    sim.advance(4 * HOUR_MS);
    expect((await client.nodes.get(a.id)).status).toBe("terminated");
    await client.nodes.delete(a.id);
    expect((await client.nodes.get(a.id)).status).toBe("deleted");
  });

  it("creates and releases an auto-reserved node", async () => {
    const [node] = (
      await client.nodes.create({ desired_count: 1, max_price_per_node_hour: 5_000, zone: "fishermanswharf" })
    ).data;
    expect(node!.node_type).toBe("autoreserved");
    expect(node!.end_at).toBeNull();
    sim.advance(6 * MINUTE_MS);
    const released = await client.nodes.release(node!.id);
    expect(released.status).toBe("released");
    expect(released.current_vm?.status).toBe("Destroyed");
  });

  it("lists zones and gets one, and lists images", async () => {
    const zones = await client.zones.list();
    expect(zones.data.map((z) => z.name)).toEqual(["hayesvalley", "fishermanswharf", "marina", "richmond"]);
    const zone = await client.zones.get("hayesvalley");
    expect(zone).toMatchObject({ hardware_type: "H100", delivery_type: "VM", region: "NorthAmerica" });
    expect(zone.available_capacity.length).toBeGreaterThan(0);
    expect((await client.vms.images.list()).data).toEqual([]);
  });

  it("gets the documented errors through the SDK's error classes", async () => {
    expect(await status(client.nodes.get("n_0000000000000000"))).toBe(404);
    expect(
      await status(
        client.nodes.create({
          desired_count: 1,
          max_price_per_node_hour: 4_000,
          zone: "hayesvalley",
          end_at: endIn(2) + 60,
        }),
      ),
    ).toBe(400);
    const poor = new SFCNodes({ baseURL: sim.url, bearerToken: "poor-account", maxRetries: 0 });
    await fetch(`${sim.url}/_sim/accounts`, {
      method: "POST",
      body: JSON.stringify({ token: "poor-account", balance_cents: 10 }),
    });
    expect(
      await status(
        poor.nodes.create({ desired_count: 1, max_price_per_node_hour: 4_000, zone: "hayesvalley", end_at: endIn(2) }),
      ),
    ).toBe(402);
    const stranger = new SFCNodes({ baseURL: sim.url, bearerToken: "nobody", maxRetries: 0 });
    expect(await status(stranger.nodes.list())).toBe(401);
  });
});
