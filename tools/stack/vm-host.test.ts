/**
 * The VM host without a Docker engine: it reads each booted VM's user data the way the agent would
 * get it, and says plainly why no agent starts. (With Docker, tools/stack/e2e.test.ts runs agents.)
 */
import { describe, expect, it } from "vitest";
import { encodeUserData, renderNodeBootScript } from "../../core/schemas/node-boot";
import { HOUR_MS, MINUTE_MS } from "../sfcompute-sim/clock";
import { SimEngine } from "../sfcompute-sim/engine";
import { startVmHost } from "./vm-host";

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
});
