/**
 * The agent against the real Docker engine and local registry (`npm run docker:up`), with the test
 * control plane as its peer: pulls, logs, exits, OOM, cancel, deadline, limits, pull failures,
 * orphans and heartbeats.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Placement } from "../core/schemas";
import { freePort, refusedPort } from "../tools/db/embedded";
import { has } from "../tools/test/parts";
import { containerSpec, LABELS } from "./container-spec";
import { DockerodeEngine } from "./docker/dockerode-engine";
import { AUTH_PASSWORD, AUTH_USER, type AuthRegistry, pushPrivateImage, startAuthRegistry } from "./test/auth-registry";
import { TestControlPlane } from "./test/control-plane";
import {
  freshImage,
  gpuEngineSocket,
  labelled,
  placement,
  shell,
  startTestAgent,
  type TestAgent,
  untagImage,
} from "./test/harness";

const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe.skipIf(!has("docker") || !has("registry"))("agent on a real Docker engine", () => {
  let cp: TestControlPlane;
  let t: TestAgent;
  let image: string;

  beforeAll(async () => {
    cp = await TestControlPlane.start();
    t = await startTestAgent(cp, { config: { orphanGraceMs: 1_000 } });
    image = await freshImage();
    await cp.waitFor("registration", () => cp.registrations.length > 0);
  });

  afterAll(async () => {
    await t?.stop();
    await cp?.close();
    if (image) await untagImage(image);
  });

  /** Adds a placement to the node's desired set. */
  const run = (overrides: Parameters<typeof placement>[0]) => {
    const p = placement(overrides);
    cp.upsertPlacement(p);
    return p;
  };

  it("pulls a missing image from the local registry, runs the container and reports exit 0 with its logs split by stream", async () => {
    const p = run({ image, ...shell("for i in 1 2 3; do echo out $i; echo err $i >&2; done") });
    const exited = await cp.outcome(p.placement_id);
    expect(exited).toMatchObject({ type: "exited", exit_code: 0, oom_killed: false });
    expect(exited).not.toHaveProperty("stopped_by");

    const events = cp.eventsFor(p.placement_id);
    const pulling = events.filter((e) => e.type === "pulling");
    expect(pulling.at(0)).toMatchObject({ progress: `pulling ${image}` });
    expect(pulling.at(-1)).toMatchObject({ progress: `pulled ${image}` });
    const types = events.map((e) => e.type).filter((type) => type !== "pulling");
    expect(types).toEqual(["running", "exited"]);

    await cp.waitFor("all six lines", () => cp.linesFor(p.placement_id).length === 6);
    expect(cp.linesFor(p.placement_id, "stdout").map((l) => l.line)).toEqual(["out 1", "out 2", "out 3"]);
    expect(cp.linesFor(p.placement_id, "stderr").map((l) => l.line)).toEqual(["err 1", "err 2", "err 3"]);
    expect(cp.linesFor(p.placement_id).map((l) => l.seq)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it("keeps a long log in order and reports a non-zero exit code", async () => {
    const p = run({ image, ...shell("i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; exit 3") });
    expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 3, oom_killed: false });
    expect(cp.eventsFor(p.placement_id).find((e) => e.type === "exited")).not.toHaveProperty("signal");
    const lines = await cp.waitFor("3000 lines", () => {
      const l = cp.linesFor(p.placement_id, "stdout");
      return l.length === 3000 && l;
    });
    expect(lines.map((l) => l.line)).toEqual(Array.from({ length: 3000 }, (_, i) => `line ${i}`));
    expect(lines.map((l) => l.seq)).toEqual(Array.from({ length: 3000 }, (_, i) => i));
  });

  it("reports a container over its memory limit as OOM-killed", async () => {
    const p = run({ image, memory_mib: 32, ...shell("echo allocating; tail -c 300000000 /dev/zero") });
    expect(await cp.outcome(p.placement_id)).toMatchObject({
      type: "exited",
      exit_code: 137,
      oom_killed: true,
      signal: "SIGKILL",
    });
  });

  it("creates the container with the placement's memory, CPU and PID limits, its labels, an init and no privileges", async () => {
    const p = run({ image, cpu_milli: 750, memory_mib: 96, ...shell("sleep 600") });
    const running = await cp.waitFor("running", () => cp.eventsFor(p.placement_id).find((e) => e.type === "running"));
    const id = running.type === "running" ? running.container_id! : "";
    const details = (await t.engine.inspect(id))!;
    expect(details).toMatchObject({
      running: true,
      memoryBytes: 96 * 1024 * 1024,
      memorySwapBytes: 96 * 1024 * 1024,
      nanoCpus: 750_000_000,
      pidsLimit: t.config.pidsLimit,
      init: true,
      privileged: false,
      gpuDeviceIds: [],
    });
    expect(details.networkMode).not.toBe("host");
    expect(details.labels).toMatchObject({
      [LABELS.managed]: "true",
      [LABELS.agent]: t.config.agentName,
      [LABELS.node]: cp.nodeId,
      [LABELS.placement]: p.placement_id,
      [LABELS.job]: p.job_id,
      [LABELS.attempt]: "1",
    });
    expect(details.env).toEqual(
      expect.arrayContaining([`SCALAR_PLACEMENT_ID=${p.placement_id}`, "NVIDIA_VISIBLE_DEVICES=void"]),
    );

    // Heartbeats carry the running placement and its metrics from the engine.
    const beat = await cp.waitFor("a heartbeat with the container's metrics", () =>
      cp.heartbeats.find((h) => h.containers.some((c) => c.placement_id === p.placement_id && c.cpu_pct !== undefined)),
    );
    expect(beat.running).toContain(p.placement_id);
    expect(beat.gpus).toHaveLength(8);
    expect(beat.disk_free_bytes).toBeGreaterThan(0);
    expect(beat.containers.find((c) => c.placement_id === p.placement_id)).toMatchObject({
      memory_limit_bytes: 96 * 1024 * 1024,
      pids: expect.any(Number),
    });

    // Reconciling again and again finds the container by its label and starts nothing twice.
    for (let i = 0; i < 5; i++) t.agent.requestReconcile();
    cp.upsertPlacement({ ...p, grace_period_ms: 1_000 });
    await cp.waitFor("another heartbeat", () => cp.heartbeats.length > cp.heartbeats.indexOf(beat) + 2);
    const mine = (await labelled(t.engine, t.config.agentName)).filter(
      (c) => c.labels[LABELS.placement] === p.placement_id,
    );
    expect(mine.map((c) => c.id)).toEqual([id]);
    expect(cp.eventsFor(p.placement_id).filter((e) => e.type === "running")).toHaveLength(1);

    cp.upsertPlacement({ ...p, desired: "stopped" });
    await cp.outcome(p.placement_id);
  });

  it("runs a multi-node job's rank on the host's network, told where rank 0 is; registers the node's address", async () => {
    expect(cp.registrations[0]).toMatchObject({ address: "10.9.8.7" });
    const p = run({
      image,
      gang_index: 1,
      gang_size: 2,
      gang_master_address: "10.9.8.1",
      ...shell('echo "$SCALAR_NODE_RANK/$SCALAR_NUM_NODES $MASTER_ADDR:$MASTER_PORT"; sleep 600'),
    });
    const running = await cp.waitFor("running", () => cp.eventsFor(p.placement_id).find((e) => e.type === "running"));
    const details = (await t.engine.inspect(running.type === "running" ? running.container_id! : ""))!;
    expect(details.networkMode).toBe("host");
    await cp.waitFor("its line", () => cp.linesFor(p.placement_id).length === 1);
    expect(cp.linesFor(p.placement_id).map((l) => l.line)).toEqual(["1/2 10.9.8.1:29500"]);
    cp.upsertPlacement({ ...p, desired: "stopped" });
    await cp.outcome(p.placement_id);
  });

  it("checks an endpoint replica's readiness and reports it in heartbeats: ready once it serves, not on a 404", async () => {
    const serve = "mkdir -p /www && echo ok > /www/health && sleep 1 && exec httpd -f -p 8080 -h /www";
    const ok = run({ image, health_check: { port: 8080, path: "/health" }, ...shell(serve) });
    const missing = run({ image, health_check: { port: 8080, path: "/nope" }, ...shell(serve) });
    const plain = run({ image, ...shell("sleep 600") });
    const readyOf = (h: (typeof cp.heartbeats)[number], id: string) =>
      h.containers.find((c) => c.placement_id === id)?.ready;
    const beat = await cp.waitFor(
      "a heartbeat with both replicas' answers",
      () =>
        cp.heartbeats.find((h) => readyOf(h, ok.placement_id) === true && readyOf(h, missing.placement_id) === false),
      30_000,
    );
    // Work without a check reports no readiness at all.
    expect(beat.containers.find((c) => c.placement_id === plain.placement_id)).not.toHaveProperty("ready");
    for (const p of [ok, missing, plain]) cp.upsertPlacement({ ...p, desired: "stopped" });
    for (const p of [ok, missing, plain]) await cp.outcome(p.placement_id);
  });

  it("stops a cancelled placement: SIGTERM, then SIGKILL after the grace period", async () => {
    const p = run({
      image,
      grace_period_ms: 5_000,
      ...shell("trap 'echo terminating; exit 0' TERM; echo started; while true; do sleep 0.1; done"),
    });
    await cp.waitFor("the first line", () => cp.linesFor(p.placement_id).length > 0);
    cp.upsertPlacement({ ...p, desired: "stopped" });
    expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 0, stopped_by: "cancel" });
    await cp.waitFor("the goodbye line", () => cp.linesFor(p.placement_id).some((l) => l.line === "terminating"));

    // A process ignoring SIGTERM is killed when the grace period is over.
    const stubborn = run({
      image,
      grace_period_ms: 1_000,
      ...shell("trap '' TERM; echo started; while true; do sleep 0.1; done"),
    });
    await cp.waitFor("the first line", () => cp.linesFor(stubborn.placement_id).length > 0);
    cp.upsertPlacement({ ...stubborn, desired: "stopped" });
    expect(await cp.outcome(stubborn.placement_id)).toMatchObject({
      type: "exited",
      exit_code: 137,
      signal: "SIGKILL",
      stopped_by: "cancel",
    });
  });

  it("stops a placement at its kill deadline", async () => {
    const p = run({ image, kill_deadline: Date.now() + 2_000, ...shell("echo started; sleep 600") });
    expect(await cp.outcome(p.placement_id)).toMatchObject({
      type: "exited",
      stopped_by: "deadline",
      signal: "SIGTERM",
    });
    expect(cp.eventsFor(p.placement_id).some((e) => e.type === "running")).toBe(true);
  });

  it("starts nothing for a placement cancelled or past its deadline before it started", async () => {
    const cancelled = run({ image, desired: "stopped", ...shell("echo should not run") });
    const late = run({ image, kill_deadline: Date.now() - 1, ...shell("echo should not run") });
    expect(await cp.outcome(cancelled.placement_id)).toMatchObject({
      type: "exited",
      exit_code: -1,
      stopped_by: "cancel",
    });
    expect(await cp.outcome(late.placement_id)).toMatchObject({
      type: "exited",
      exit_code: -1,
      stopped_by: "deadline",
    });
    for (const p of [cancelled, late])
      expect(cp.eventsFor(p.placement_id).some((e) => e.type === "running")).toBe(false);
  });

  describe("pull policy", () => {
    /** The cached test image under another name: a registry on a port nothing listens on. */
    const cachedUnderDeadRegistry = async (tag: string) => {
      await t.engine.pull(image, () => {});
      const ref = `127.0.0.1:${await refusedPort()}/test/busybox`;
      await t.engine.docker.getImage(image).tag({ repo: ref, tag });
      return `${ref}:${tag}`;
    };

    it("auto: a cached image with a fixed tag starts without a registry call or a pulling event", async () => {
      const cached = await cachedUnderDeadRegistry("1");
      try {
        const p = run({ image: cached, ...shell("true") });
        expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
        expect(cp.eventsFor(p.placement_id).map((e) => e.type)).toEqual(["running", "exited"]);
      } finally {
        await untagImage(cached);
      }
    });

    it("auto: `latest` asks the registry every time (here down: the local copy runs, and the event says so)", async () => {
      const cached = await cachedUnderDeadRegistry("latest");
      try {
        const p = run({ image: cached, ...shell("true") });
        expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
        const pulling = cp.eventsFor(p.placement_id).filter((e) => e.type === "pulling");
        expect(pulling.at(0)).toMatchObject({ progress: `pulling ${cached}` });
        expect(pulling.at(-1)).toMatchObject({ progress: expect.stringMatching(/registry unreachable .*local copy/) });
      } finally {
        await untagImage(cached);
      }
    });

    it("always: pulls a cached image with a fixed tag again", async () => {
      const other = await TestControlPlane.start();
      const always = await startTestAgent(other, { config: { pullPolicy: "always" } });
      try {
        await t.engine.pull(image, () => {});
        const p = placement({ image, ...shell("true") });
        other.setPlacements([p]);
        expect(await other.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
        const pulling = other.eventsFor(p.placement_id).filter((e) => e.type === "pulling");
        expect(pulling.map((e) => e.type === "pulling" && e.progress)).toEqual(
          expect.arrayContaining([`pulling ${image}`, `pulled ${image}`]),
        );
      } finally {
        await always.stop();
        await other.close();
      }
    });
  });

  /** The placement fails with this reason, retryable or not, and leaves no container. */
  const failsWith = async (p: ReturnType<typeof placement>, reason: RegExp, retryable: boolean) => {
    const outcome = await cp.outcome(p.placement_id);
    expect(outcome.type).toBe("failed");
    expect(outcome.type === "failed" && outcome.reason).toMatch(reason);
    // Only a failure another attempt could pass is left to the control plane to retry.
    expect(outcome.type === "failed" && outcome.retryable !== false).toBe(retryable);
    const left = (await labelled(t.engine, t.config.agentName)).filter(
      (c) => c.labels[LABELS.placement] === p.placement_id,
    );
    expect(left).toEqual([]);
    return outcome;
  };

  describe("image pull failures fail the placement with the reason and leave no container", () => {
    const pullFails = (badImage: string, reason: RegExp, retryable: boolean) =>
      failsWith(run({ image: badImage, ...shell("true") }), reason, retryable);

    it("bad name", () => pullFails("Not/A-Valid:Name", /invalid image name "Not\/A-Valid:Name".*lowercase/, false));
    it("not found", async () => {
      const missing = `${image.slice(0, image.lastIndexOf(":"))}:no-such-tag`;
      await pullFails(missing, /image pull failed: .*no-such-tag not found .*manifest unknown/, false);
    });
    it("registry down", async () => {
      const port = await freePort();
      await pullFails(`127.0.0.1:${port}/test/busybox:1`, /registry unreachable .*connection refused/, true);
    });
  });

  describe("a private registry (docker-registry behind htpasswd): the account's credentials from the control plane", () => {
    let registry: AuthRegistry;
    /** The test image under another id (a label added), pushed to the private registry only. */
    let privateImage: string;
    const right = { username: AUTH_USER, password: AUTH_PASSWORD };
    const wrong = { username: AUTH_USER, password: "not-the-password" };

    beforeAll(async () => {
      registry = await startAuthRegistry();
      privateImage = await pushPrivateImage(t.engine, registry, image);
    });

    afterAll(async () => {
      await registry?.stop();
      if (privateImage) await untagImage(privateImage);
    });

    /** A placement whose control plane answers these credentials for its registry. */
    const runWith = (credentials: { username: string; password: string } | null, img = privateImage) => {
      const p = placement({ image: img, ...shell("echo private") });
      cp.placementCredentials.set(p.placement_id, credentials);
      cp.upsertPlacement(p);
      return p;
    };

    it("without credentials: needs registry credentials, not retryable, naming the command that adds them", async () => {
      const p = runWith(null, `${registry.host}/test/busybox:1`);
      await failsWith(
        p,
        new RegExp(
          `needs registry credentials .*no basic auth credentials.*scalar registries add ${literal(registry.host)}`,
        ),
        false,
      );
    });

    it("(a) the right credentials: pulls with them, runs, and records only their fingerprint", async () => {
      const p = runWith(right);
      expect(await cp.outcome(p.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
      expect(cp.registryAuthRequests).toContain(p.placement_id);
      const progress = cp.eventsFor(p.placement_id).flatMap((e) => (e.type === "pulling" ? [e.progress] : []));
      expect(progress.at(0)).toBe(
        `pulling ${privateImage} with the account's credentials for ${registry.host} (user ${AUTH_USER})`,
      );
      expect(progress.at(-1)).toBe(`pulled ${privateImage}`);
      await cp.waitFor("its line", () => cp.linesFor(p.placement_id).at(0)?.line === "private");

      const id = await t.engine.imageId(privateImage);
      const stateFile = readFileSync(join(t.config.dataDir, "state.json"), "utf8");
      expect(JSON.parse(stateFile).images[id!]).toMatchObject({
        ref: privateImage,
        fingerprints: [expect.stringMatching(/^sha256:[0-9a-f]{64}$/)],
      });
      expect(stateFile).not.toContain(AUTH_PASSWORD);
      expect(JSON.stringify(cp.events)).not.toContain(AUTH_PASSWORD);
    });

    it("(b) wrong credentials: the registry refused the account's credentials, not retryable", async () => {
      const p = runWith(wrong);
      const outcome = await failsWith(
        p,
        new RegExp(`the registry refused the account's credentials for ${literal(registry.host)} \\(user scalar\\)`),
        false,
      );
      expect(JSON.stringify(outcome)).not.toContain(wrong.password);
    });

    it("(c) no credentials, with the image cached by (a): no start from the cache, needs registry credentials", async () => {
      expect(await t.engine.hasImage(privateImage)).toBe(true);
      const p = runWith(null);
      await failsWith(
        p,
        new RegExp(`needs registry credentials .*scalar registries add ${literal(registry.host)}`),
        false,
      );
      expect(cp.registryAuthRequests).toContain(p.placement_id);
      expect(cp.eventsFor(p.placement_id).some((e) => e.type === "running")).toBe(false);
      // The same credentials as (a) still start from the cache, without a pull.
      const again = runWith(right);
      expect(await cp.outcome(again.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
      expect(cp.eventsFor(again.placement_id).map((e) => e.type)).toEqual(["running", "exited"]);
    });
  });

  it("removes a finished container once its placement leaves the desired set", async () => {
    const p = run({ image, ...shell("echo bye") });
    await cp.outcome(p.placement_id);
    await cp.waitFor("its line", () => cp.linesFor(p.placement_id).length === 1);
    cp.removePlacement(p.placement_id);
    await expect
      .poll(
        async () =>
          (await labelled(t.engine, t.config.agentName)).some((c) => c.labels[LABELS.placement] === p.placement_id),
        {
          timeout: 25_000,
          interval: 200,
        },
      )
      .toBe(false);
  });

  it("adopts a container that a previous agent process started but never reported, and starts no second one", async () => {
    const agentName = `test-adopt-${Date.now()}`;
    const p = placement({ image, grace_period_ms: 1_000, ...shell("echo from before; sleep 600") });
    // What a previous process left: the container, started, with no event sent and no state on disk.
    await t.engine.pull(image, () => {});
    const id = await t.engine.create(containerSpec(Placement.parse(p), { agentName, nodeId: "n-old", pidsLimit: 64 }));
    await t.engine.start(id);
    const other = await TestControlPlane.start();
    other.setPlacements([p]);
    const second = await startTestAgent(other, { config: { agentName } });
    try {
      const running = await other.waitFor("running", () =>
        other.eventsFor(p.placement_id).find((e) => e.type === "running"),
      );
      expect(running).toMatchObject({ container_id: id });
      await other.waitFor("the line from before", () => other.linesFor(p.placement_id).at(0)?.line === "from before");
      other.setPlacements([{ ...p, desired: "stopped" }]);
      expect(await other.outcome(p.placement_id)).toMatchObject({ type: "exited", stopped_by: "cancel" });
      expect((await labelled(t.engine, agentName)).map((c) => c.id)).toEqual([id]);
    } finally {
      await second.stop();
      await other.close();
    }
  });

  it("starts a new placement at once, without waiting for a listing of the engine's containers", async () => {
    // An engine whose listing hangs while `gate` is set: a reconcile in progress waits for it.
    class SlowListing extends DockerodeEngine {
      gate: Promise<void> | null = null;
      override async list(labels: Record<string, string>) {
        if (this.gate) await this.gate;
        return super.list(labels);
      }
    }
    const engine = new SlowListing({ socketPath: gpuEngineSocket() });
    const other = await TestControlPlane.start();
    const agent = await startTestAgent(other, { engine });
    let open = () => {};
    try {
      // A first placement runs the usual way: the agent's first reconcile has looked at the engine.
      const first = placement({ image, ...shell("echo first") });
      other.upsertPlacement(first);
      expect(await other.outcome(first.placement_id)).toMatchObject({ type: "exited", exit_code: 0 });
      engine.gate = new Promise((resolve) => {
        open = resolve;
      });
      const second = placement({ image, ...shell("echo second") });
      other.upsertPlacement(second);
      expect(await other.outcome(second.placement_id, 15_000)).toMatchObject({ type: "exited", exit_code: 0 });
      await other.waitFor("its line", () => other.linesFor(second.placement_id).at(0)?.line === "second");
    } finally {
      engine.gate = null;
      open();
      await agent.stop();
      await other.close();
    }
  });

  it("registers again when the control plane says it does not know the node", async () => {
    const before = cp.registrations.length;
    cp.forgetNode = true;
    await cp.waitFor("a new registration", () => cp.registrations.length > before);
    expect(cp.registrations.at(-1)).toMatchObject({ gpu_model: "H100", cpu_milli: 2_000, memory_mib: 4_096 });
    expect(cp.registrations.at(-1)?.gpus).toHaveLength(8);
  });

  it("removes orphaned containers with our labels after the grace period, and leaves other containers alone", async () => {
    // Containers left running by an agent of the same name, whose placements the control plane no longer has.
    const agentName = `test-orphans-${Date.now()}`;
    const container = (name: string, labels: Record<string, string>) =>
      t.engine.create({
        name: `${name}-${Date.now()}`,
        image,
        cmd: ["sleep", "600"],
        env: [],
        labels,
        memoryBytes: 32 << 20,
        nanoCpus: 100_000_000,
        pidsLimit: 16,
        gpuDeviceIds: [],
      });
    const orphan = await container("scalar-orphan", {
      [LABELS.managed]: "true",
      [LABELS.agent]: agentName,
      [LABELS.placement]: "p-nobody-wants",
    });
    const stranger = await container("not-ours", { unrelated: "yes" });
    const empty = await TestControlPlane.start();
    let second: TestAgent | null = null;
    try {
      await t.engine.start(orphan);
      await t.engine.start(stranger);
      second = await startTestAgent(empty, { config: { agentName, orphanGraceMs: 1_000, orphanStopGraceMs: 1_000 } });
      await expect.poll(() => t.engine.inspect(orphan), { timeout: 20_000, interval: 200 }).toBeNull();
      expect((await t.engine.inspect(stranger))?.running).toBe(true);
    } finally {
      await second?.stop();
      await empty.close();
      await t.engine.remove(orphan);
      await t.engine.remove(stranger);
    }
  });
});
