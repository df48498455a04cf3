/**
 * Resilience with real `scalar-agent` processes (node-agent/bin/scalar-agent.mjs) killed with
 * SIGKILL: re-adoption of a running container, and a 30 s control-plane outage during which the
 * job ends and the agent is restarted, losing no event and no log line.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PlacementEvent } from "../core/schemas";
import { has } from "../tools/test/parts";
import { LABELS } from "./container-spec";
import { DockerodeEngine } from "./docker/dockerode-engine";
import { readJson } from "./files";
import { TestControlPlane } from "./test/control-plane";
import {
  AgentProcess,
  eventually,
  freshImage,
  gpuEngineSocket,
  labelled,
  placement,
  removeLabelled,
  shell,
  untagImage,
} from "./test/harness";

const OUTAGE_MS = 30_000;

/** Prints `tick N` five times a second until SIGUSR1 (forwarded by the container's init), then exits 3. */
const TICKER = shell(
  "trap 'echo got USR1; exit 3' USR1; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2 & wait $!; done",
);

describe.skipIf(!has("docker") || !has("registry"))("agent restarts and control-plane outages", () => {
  let engine: DockerodeEngine;
  let image: string;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    engine = new DockerodeEngine({ socketPath: gpuEngineSocket() });
    image = await freshImage();
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    if (image) await untagImage(image);
  });

  async function setup() {
    const cp = await TestControlPlane.start();
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-proc-"));
    const agentName = `test-${randomBytes(4).toString("hex")}`;
    const args = { apiUrl: cp.url, token: cp.token, socket: gpuEngineSocket(), dataDir, agentName };
    const processes: AgentProcess[] = [];
    const spawnAgent = () => {
      const proc = new AgentProcess(args);
      proc.start();
      processes.push(proc);
      return proc;
    };
    cleanups.push(async () => {
      for (const p of processes) await p.kill();
      await cp.close();
      await removeLabelled(engine, agentName);
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(`${dataDir}.log`, { force: true });
    });
    return { cp, dataDir, agentName, spawnAgent };
  }

  const seqs = (lines: { seq: number }[]) => lines.map((l) => l.seq);
  const upTo = (n: number) => Array.from({ length: n }, (_, i) => i);

  it("re-adopts a running container after the agent is killed, and starts nothing twice", async () => {
    const { cp, agentName, spawnAgent } = await setup();
    const first = spawnAgent();
    const p = placement({ image, grace_period_ms: 2_000, ...TICKER });
    cp.setPlacements([p]);
    const running = await cp.waitFor(
      "running (after the agent process starts)",
      () => cp.eventsFor(p.placement_id).find((e) => e.type === "running"),
      60_000,
    );
    await cp.waitFor("a few ticks", () => cp.linesFor(p.placement_id).length >= 3);

    await first.kill();
    const heartbeatsBefore = cp.heartbeats.length;
    spawnAgent();
    // The new process reports the container as its own…
    await cp.waitFor(
      "a heartbeat of the new process listing the placement",
      () => cp.heartbeats.slice(heartbeatsBefore).some((h) => h.running.includes(p.placement_id)),
      60_000,
    );
    const ticksAtAdoption = cp.linesFor(p.placement_id).length;
    await cp.waitFor(
      "more ticks from the adopted container",
      () => cp.linesFor(p.placement_id).length > ticksAtAdoption + 3,
    );
    // …and still controls it.
    cp.setPlacements([{ ...p, desired: "stopped" }]);
    expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", stopped_by: "cancel" });

    const containers = (await labelled(engine, agentName)).filter((c) => c.labels[LABELS.placement] === p.placement_id);
    expect(containers.map((c) => c.id)).toEqual([running.type === "running" ? running.container_id : "?"]);
    expect(cp.eventsFor(p.placement_id).filter((e) => e.type === "running")).toHaveLength(1);
    expect(cp.registrations).toHaveLength(2);

    // The log continues where the acknowledged part ended: every seq once, ticks in order, none twice.
    const lines = cp.linesFor(p.placement_id);
    expect(seqs(lines)).toEqual(upTo(lines.length));
    expect(lines.map((l) => l.line)).toEqual(upTo(lines.length).map((i) => `tick ${i}`));
  }, 90_000);

  it(
    `loses no event and no log line in a ${OUTAGE_MS / 1000} s outage, even with an agent restart in the middle`,
    async () => {
      const { cp, dataDir, spawnAgent } = await setup();
      const first = spawnAgent();
      const p = placement({ image, ...TICKER });
      cp.setPlacements([p]);
      const running = await cp.waitFor(
        "running (after the agent process starts)",
        () => cp.eventsFor(p.placement_id).find((e) => e.type === "running"),
        60_000,
      );
      await cp.waitFor("a few ticks", () => cp.linesFor(p.placement_id).length >= 3);

      await cp.goDown();
      const outageStarted = Date.now();
      // The job ends during the outage: its exit can only be queued on disk.
      await engine.docker
        .getContainer(running.type === "running" ? running.container_id! : "")
        .kill({ signal: "SIGUSR1" });
      const outbox = join(dataDir, "outbox.json");
      const queued = await eventually("the exit event in the on-disk outbox", () => {
        const events = (readJson(outbox) ?? []) as PlacementEvent[];
        return events.some((e) => e.type === "exited") ? events : null;
      });
      // A crash while the control plane is away: the next process must send what the first one queued.
      await first.kill();
      spawnAgent();
      const rest = OUTAGE_MS - (Date.now() - outageStarted);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest));
      expect(cp.eventsFor(p.placement_id).some((e) => e.type === "exited")).toBe(false);
      await cp.comeBack();

      expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 3, oom_killed: false });
      await eventually("an empty outbox", () => ((readJson(outbox) ?? []) as PlacementEvent[]).length === 0);
      const received = new Set(cp.events.map((e) => e.event_id));
      for (const e of queued) expect(received).toContain(e.event_id);
      expect(
        cp
          .eventsFor(p.placement_id)
          .map((e) => e.type)
          .filter((t) => t !== "pulling"),
      ).toEqual(["running", "exited"]);

      const lines = await cp.waitFor("the last line", () => {
        const l = cp.linesFor(p.placement_id);
        return l.at(-1)?.line === "got USR1" && l;
      });
      expect(seqs(lines)).toEqual(upTo(lines.length));
      expect(lines.slice(0, -1).map((l) => l.line)).toEqual(upTo(lines.length - 1).map((i) => `tick ${i}`));
    },
    OUTAGE_MS + 90_000,
  );
});
