/**
 * The VM host without a Docker engine: it reads each booted VM's user data the way the agent would
 * get it, and says plainly why no agent starts; the command line it gives agents is one the agent
 * accepts. (With Docker, tools/stack/e2e.test.ts runs agents.)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { encodeUserData, renderNodeBootScript } from "../../core/schemas/node-boot";
import { parseCli } from "../../node-agent/cli";
import { HOUR_MS, MINUTE_MS } from "../sfcompute-sim/clock";
import { SimEngine } from "../sfcompute-sim/engine";
import { agentArgs, startVmHost, VM_SHAPE } from "./vm-host";

const START = Date.parse("2026-03-02T17:20:00Z");

describe("the VM host", () => {
  it("decodes the boot script of each VM that boots, and starts no agent without Docker", async () => {
    const engine = new SimEngine({
      clock: "virtual",
      start: START,
      seed: 3,
      settings: { nodes: { bootDelayMs: [5_000, 5_000] } },
    });
    const account = engine.createAccount({ token: "t", balanceCents: 100_000_000 });
    const lines: string[] = [];
    const host = startVmHost({
      engine,
      apiUrl: "http://127.0.0.1:9",
      stateDir: "/nonexistent",
      dockerSocket: null,
      instanceId: "test",
      log: (l) => lines.push(l),
    });
    const userData = encodeUserData(
      renderNodeBootScript({
        api_url: "http://127.0.0.1:9",
        node_token: "snt_0123456789abcdef0123456789",
        node_id: "cap-abc-0",
        region: "us-west-1",
        zone: "hayesvalley",
        gpu_model: "H100",
      }),
    );
    const end = Math.floor((START + 3 * HOUR_MS) / HOUR_MS) * (HOUR_MS / 1000);
    for (const [name, data] of [
      ["cap-abc-0", userData],
      ["someone-else", encodeUserData("#!/bin/sh\necho hi\n")],
    ] as const) {
      engine.nodes.create(account, {
        desired_count: 1,
        max_price_per_node_hour: 100_000,
        zone: "hayesvalley",
        node_type: "reserved",
        end_at: end,
        names: [name],
        cloud_init_user_data: data,
      });
    }
    engine.advanceBy(2 * MINUTE_MS);
    await new Promise((r) => setTimeout(r, 10));
    expect(lines).toContain("VM cap-abc-0 booted, but no Docker engine is reachable: its agent is not started");
    expect(lines.some((l) => /^VM someone-else \(n_\w+\) booted without a Scalar boot script: no agent$/.test(l))).toBe(
      true,
    );
    expect(host.agents()).toEqual([]);
    await host.stop();
  });

  it("gives each agent a loopback ingress with its URL, on a command line the agent accepts", () => {
    const dir = mkdtempSync(join(tmpdir(), "vm-host-"));
    const tokenFile = join(dir, "node-token");
    writeFileSync(tokenFile, "snt_0123456789abcdef0123456789\n");
    const args = agentArgs({
      boot: {
        api_url: "http://127.0.0.1:8787",
        node_token: "snt_0123456789abcdef0123456789",
        node_id: "cap-abc-0",
        region: "us-west-1",
        zone: "hayesvalley",
        gpu_model: "H100",
      },
      tokenFile,
      dataDir: "/state/agents/cap-abc-0/data",
      dockerSocket: "/run/docker.sock",
      agentName: "cap-abc-0.test",
      ingressPort: 41_234,
    });
    // As the agent reads it on a host whose own address is not loopback; the token file on its
    // command line wins over a token left in the environment.
    const o = parseCli(args, { SCALAR_NODE_TOKEN: "stale" }, "h", "192.0.2.4");
    rmSync(dir, { recursive: true, force: true });
    expect(o.token).toBe("snt_0123456789abcdef0123456789");
    expect(o.agent.ingress).toEqual({ port: 41_234, host: "127.0.0.1", url: "http://127.0.0.1:41234" });
    expect(o.gpus).toEqual({ kind: "declared", count: VM_SHAPE.gpus, model: "H100" });
    expect(o.agent).toMatchObject({ agentName: "cap-abc-0.test", zone: "hayesvalley" });
  });
});
