/**
 * The node's state as the control plane answers heartbeats with it: the agent logs each change once
 * (an operator's cordon, a drain, back to ready), so its log says why no new work arrives.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Logger } from "./logger";
import { TestControlPlane } from "./test/control-plane";
import { FakeEngine } from "./test/fake-engine";
import { startUnitAgent } from "./test/harness";

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
});
