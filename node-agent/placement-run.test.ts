/**
 * A placement's image pull with registry credentials (private-images.ts), on a fake engine and a
 * fake control plane: when the agent asks the control plane, when it pulls and with what, what it
 * records, and what it never writes down.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { z } from "zod";
import { Placement, type PlacementEvent, type RegistryAuth, registryOf } from "../core/schemas";
import { type Clock, systemClock } from "./clock";
import { ControlPlaneError } from "./control-plane";
import { EngineError, type LogEnd, type LogEntry, type RegistryCredentials } from "./docker/engine";
import { EngineWatchdog } from "./engine-watchdog";
import { readJson } from "./files";
import { DEFAULT_LOG_SHIPPER, LogShipper } from "./log-shipper";
import type { Logger } from "./logger";
import { EventOutbox } from "./outbox";
import {
  DEADLINE_RECHECK_MS,
  LOG_SILENCE_AFTER_EXIT_MS,
  PlacementRun,
  REGISTRY_AUTH_TRIES,
  type RunContext,
  shipContainerLog,
} from "./placement-run";
import { ANONYMOUS, MAX_FINGERPRINTS, PRUNE_INTERVAL_MS, PrivateImages } from "./private-images";
import type { PullPolicy } from "./pull-policy";
import { AgentState } from "./state";
import { FakeEngine } from "./test/fake-engine";
import { placement as testPlacement } from "./test/harness";
import { LiveEngine } from "./test/live-engine";

const REGISTRY = "registry.example.com";
const IMAGE = `${REGISTRY}/org/app:1`;
const ALICE = { username: "alice", password: "alice-s3cret-pw" };
const BOB = { username: "bob", password: "bob-other-s3cret" };

/** The control plane's registry-auth route: each placement's answer (set by `run`), or an error. */
class FakeAuth {
  readonly asked: string[] = [];
  readonly answers = new Map<string, RegistryAuth>();
  error: ((placementId: string) => Error) | null = null;

  async registryAuth(placementId: string): Promise<RegistryAuth> {
    this.asked.push(placementId);
    if (this.error) throw this.error(placementId);
    const answer = this.answers.get(placementId);
    if (!answer) throw new ControlPlaneError("rejected", "404 unknown_placement", 404, "unknown_placement");
    return answer;
  }
}

/** A registry that only lets these users read, and answers this image id. */
const privateRegistry =
  (users: { username: string; password: string }[], id = "sha256:private") =>
  (_ref: string, credentials?: RegistryCredentials) => {
    if (!credentials) throw new EngineError("image_unauthorized", "no basic auth credentials");
    if (!users.some((u) => u.username === credentials.username && u.password === credentials.password)) {
      throw new EngineError("image_unauthorized", "unauthorized: authentication required");
    }
    return id;
  };

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

let counter = 0;

/** One agent's worth of run context over a data folder (a new one unless given: a restart reuses it). */
function node(opts: { dataDir?: string; engine?: FakeEngine; pullPolicy?: PullPolicy; clock?: Clock } = {}) {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "scalar-run-"));
  if (!opts.dataDir) dirs.push(dataDir);
  const engine = opts.engine ?? new FakeEngine();
  const api = new FakeAuth();
  const logs: string[] = [];
  const log: Logger = (level, msg, fields) => logs.push(JSON.stringify({ level, msg, ...fields }));
  const state = AgentState.open(dataDir);
  const outbox = EventOutbox.open(dataDir, { log });
  const images = new PrivateImages(state, engine, systemClock, log);
  const ctx: RunContext = {
    engine,
    api,
    images,
    clock: opts.clock ?? systemClock,
    state,
    outbox,
    shipper: new LogShipper(() => {}, log),
    log,
    agentName: "unit",
    nodeId: () => "node-1",
    pidsLimit: 64,
    pullProgressIntervalMs: 0,
    pullPolicy: opts.pullPolicy ?? "auto",
    incarnation: "i1",
    logSilenceAfterExitMs: LOG_SILENCE_AFTER_EXIT_MS,
    backoff: { initialMs: 1, maxMs: 5, factor: 2, jitter: 0 },
    random: () => 0,
    onSettled: () => {},
  };
  /** Runs one placement to its end; its events, in order. */
  const run = async (
    over: Partial<z.input<typeof Placement>> & { credentials?: RegistryAuth["credentials"] } = {},
  ): Promise<PlacementEvent[]> => {
    const { credentials, ...rest } = over;
    const placement = Placement.parse(
      testPlacement({ placement_id: `p${counter++}`, job_id: "j", image: IMAGE, cpu_milli: 100, ...rest }),
    );
    api.answers.set(placement.placement_id, {
      registry: registryOf(placement.image),
      credentials: credentials ?? null,
    });
    const r = new PlacementRun(ctx, placement);
    await r.done;
    return events().filter((e) => e.placement_id === placement.placement_id);
  };
  const events = (): PlacementEvent[] => (readJson(join(dataDir, "outbox.json")) as PlacementEvent[] | undefined) ?? [];
  const stateFile = () => readFileSync(join(dataDir, "state.json"), "utf8");
  return { dataDir, engine, api, ctx, state, images, logs, run, events, stateFile };
}

const types = (events: PlacementEvent[]) => events.map((e) => e.type);
const pulling = (events: PlacementEvent[]) => events.flatMap((e) => (e.type === "pulling" ? [e.progress] : []));
const failure = (events: PlacementEvent[]) =>
  events.find((e) => e.type === "failed") as Extract<PlacementEvent, { type: "failed" }> | undefined;

describe("pulling with the account's registry credentials", () => {
  it("starts a cached public image with a fixed tag without asking the control plane or the registry", async () => {
    const n = node();
    n.engine.images.set(IMAGE, "sha256:public");
    expect(types(await n.run())).toEqual(["running", "exited"]);
    expect(n.api.asked).toEqual([]);
    expect(n.engine.pulls).toEqual([]);
    // The image check is the only engine call before create: the hot path has nothing more.
    expect(n.engine.calls.slice(0, 2)).toEqual(["imageId", "create"]);
  });

  it("asks for credentials before pulling a missing image, pulls with them and records their fingerprint", async () => {
    const n = node();
    n.engine.registry = privateRegistry([ALICE]);
    const events = await n.run({ credentials: ALICE });
    expect(types(events).filter((t) => t !== "pulling")).toEqual(["running", "exited"]);
    expect(n.api.asked).toHaveLength(1);
    expect(n.engine.pulls).toEqual([
      { ref: IMAGE, credentials: { username: "alice", password: ALICE.password, serveraddress: REGISTRY } },
    ]);
    expect(pulling(events)[0]).toBe(`pulling ${IMAGE} with the account's credentials for ${REGISTRY} (user alice)`);
    expect(pulling(events).at(-1)).toBe(`pulled ${IMAGE}`);
    const record = n.state.imageRecord("sha256:private");
    expect(record).toMatchObject({
      ref: IMAGE,
      fingerprints: [n.images.fingerprint({ registry: REGISTRY, credentials: ALICE })],
    });
    expect(record?.fingerprints[0]).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("starts a cached private image without a pull for the credentials it was pulled with", async () => {
    const n = node();
    n.engine.registry = privateRegistry([ALICE]);
    await n.run({ credentials: ALICE });
    n.engine.registry = () => {
      throw new Error("no pull expected");
    };
    const events = await n.run({ credentials: ALICE });
    expect(types(events)).toEqual(["running", "exited"]);
    expect(n.api.asked).toHaveLength(2);
    expect(n.engine.pulls).toHaveLength(1);
  });

  it("pulls a cached private image again for other credentials, and adds theirs once the registry agrees", async () => {
    const n = node();
    n.engine.registry = privateRegistry([ALICE, BOB]);
    await n.run({ credentials: ALICE });
    const events = await n.run({ credentials: BOB });
    expect(types(events).filter((t) => t !== "pulling")).toEqual(["running", "exited"]);
    expect(n.engine.pulls.map((p) => p.credentials?.username)).toEqual(["alice", "bob"]);
    expect(n.state.imageRecord("sha256:private")?.fingerprints).toEqual([
      n.images.fingerprint({ registry: REGISTRY, credentials: ALICE }),
      n.images.fingerprint({ registry: REGISTRY, credentials: BOB }),
    ]);
  });

  it("pulls a cached private image anonymously for a placement without credentials: the registry refuses, not retryable", async () => {
    const n = node();
    n.engine.registry = privateRegistry([ALICE]);
    await n.run({ credentials: ALICE });
    const events = await n.run({ credentials: null });
    expect(n.engine.pulls.at(-1)).toEqual({ ref: IMAGE });
    expect(types(events)).not.toContain("running");
    expect(failure(events)).toMatchObject({
      reason: `image pull failed: ${IMAGE} needs registry credentials (no basic auth credentials); the account can add them with \`scalar registries add ${REGISTRY}\``,
      retryable: false,
    });
    expect(n.engine.containerCount).toBe(1); // only the first placement's
    expect(n.state.imageRecord("sha256:private")?.fingerprints).toHaveLength(1);
  });

  it("says the registry refused the account's credentials (user shown, password not), not retryable", async () => {
    const n = node();
    n.engine.registry = privateRegistry([ALICE]);
    await n.run({ credentials: ALICE });
    const wrong = { username: "alice", password: "not-the-password" };
    const events = await n.run({ credentials: wrong });
    expect(failure(events)).toMatchObject({
      reason: `image pull failed: the registry refused the account's credentials for ${REGISTRY} (user alice) for ${IMAGE} (unauthorized: authentication required); update them with \`scalar registries add ${REGISTRY}\``,
      retryable: false,
    });
    expect(JSON.stringify(events)).not.toContain(wrong.password);
  });

  it("drops the record when an anonymous pull succeeds (the image is public): later starts skip the control plane again", async () => {
    const n = node();
    n.engine.registry = privateRegistry([ALICE]);
    await n.run({ credentials: ALICE });
    n.engine.registry = () => "sha256:private"; // made public
    const events = await n.run({ credentials: null });
    expect(types(events).filter((t) => t !== "pulling")).toEqual(["running", "exited"]);
    expect(n.engine.pulls.at(-1)).toEqual({ ref: IMAGE });
    expect(n.state.imageRecord("sha256:private")).toBeUndefined();
    const asked = n.api.asked.length;
    expect(types(await n.run())).toEqual(["running", "exited"]);
    expect(n.api.asked).toHaveLength(asked);
  });

  it("uses the local copy while the registry is unreachable only for a public image or the recorded credentials", async () => {
    // `:latest` is pulled before every start, so every start meets the unreachable registry.
    const latest = `${REGISTRY}/org/app:latest`;
    const n = node();
    n.engine.registry = privateRegistry([ALICE, BOB]);
    await n.run({ image: latest, credentials: ALICE });
    n.engine.registry = () => {
      throw new EngineError("registry_unreachable", "dial tcp: connection refused");
    };
    const same = await n.run({ image: latest, credentials: ALICE });
    expect(types(same).filter((t) => t !== "pulling")).toEqual(["running", "exited"]);
    expect(pulling(same).at(-1)).toMatch(/^registry unreachable .*; using the local copy of/);

    for (const credentials of [BOB, null]) {
      const other = await n.run({ image: latest, credentials });
      expect(types(other)).not.toContain("running");
      expect(failure(other)).toMatchObject({
        reason: expect.stringMatching(
          /registry unreachable .*connection refused.*the local copy was pulled with other credentials/,
        ),
      });
      expect(failure(other)).not.toHaveProperty("retryable"); // retryable: the registry may be back
    }

    const pub = `${REGISTRY}/org/public:latest`;
    n.engine.images.set(pub, "sha256:public");
    expect(types(await n.run({ image: pub })).filter((t) => t !== "pulling")).toEqual(["running", "exited"]);
  });

  it("keeps the record across an agent restart (state file), with fingerprints only: no password in the state, events or logs", async () => {
    const engine = new FakeEngine();
    engine.registry = privateRegistry([ALICE, BOB]);
    const first = node({ engine });
    await first.run({ credentials: ALICE });

    const second = node({ engine, dataDir: first.dataDir });
    await second.images.start();
    const again = await second.run({ credentials: ALICE });
    expect(types(again)).toEqual(["running", "exited"]); // asked, not pulled
    expect(second.api.asked).toHaveLength(1);
    expect(engine.pulls).toHaveLength(1);
    await second.run({ credentials: null }); // refused: needs credentials
    await second.run({ credentials: BOB }); // pulls with Bob's
    expect(engine.pulls.map((p) => p.credentials?.username ?? ANONYMOUS)).toEqual(["alice", ANONYMOUS, "bob"]);

    for (const text of [
      second.stateFile(),
      JSON.stringify(second.events()),
      [...first.logs, ...second.logs].join("\n"),
    ]) {
      expect(text).not.toContain(ALICE.password);
      expect(text).not.toContain(BOB.password);
    }
    expect(JSON.parse(second.stateFile()).images["sha256:private"]).toEqual({
      ref: IMAGE,
      fingerprints: [expect.stringMatching(/^sha256:/), expect.stringMatching(/^sha256:/)],
      at: expect.any(Number),
    });
  });

  it("masks the password should the engine's messages carry it", async () => {
    const n = node();
    n.engine.registry = (_ref, credentials) => {
      throw new EngineError("engine", `login as ${credentials?.username}:${credentials?.password} failed`);
    };
    const events = await n.run({ credentials: ALICE });
    expect(failure(events)?.reason).toBe(`image pull failed for ${IMAGE}: login as alice:*** failed`);
    expect(n.logs.join("\n")).not.toContain(ALICE.password);
  });

  it("starts nothing and reports nothing when the control plane says the placement is not active here (unknown_placement)", async () => {
    const n = node();
    n.api.error = (id) =>
      new ControlPlaneError(
        "rejected",
        `GET …/${id}/registry-auth: 404 unknown_placement: gone`,
        404,
        "unknown_placement",
      );
    const events = await n.run();
    expect(events).toEqual([]);
    expect(n.engine.pulls).toEqual([]);
    expect(n.engine.containerCount).toBe(0);
    expect(n.state.placement(`p${counter - 1}`).finished).toBeUndefined(); // the next reconcile may launch it again
    expect(n.logs.join("\n")).toContain("placement not active on this node any more");
  });

  it("reports a placement cancelled meanwhile as stopped before it started when the control plane says it is not active", async () => {
    const n = node();
    let run: PlacementRun | null = null;
    n.api.error = () => {
      run?.update({ ...run.placement, desired: "stopped" });
      return new ControlPlaneError("rejected", "404 unknown_placement", 404, "unknown_placement");
    };
    const placement = Placement.parse(
      testPlacement({ placement_id: "p-cancelled", job_id: "j", image: IMAGE, cpu_milli: 100 }),
    );
    run = new PlacementRun(n.ctx, placement);
    await run.done;
    expect(n.events().filter((e) => e.placement_id === "p-cancelled")).toMatchObject([
      { type: "exited", exit_code: -1, stopped_by: "cancel" },
    ]);
  });

  it("fails the attempt as retryable when the credentials cannot be fetched (unreachable: after a few tries)", async () => {
    const n = node();
    n.api.error = () => new ControlPlaneError("unreachable", "GET …/registry-auth: 503 secrets_unavailable: down", 503);
    const events = await n.run();
    expect(failure(events)).toEqual(
      expect.objectContaining({
        reason: "could not fetch registry credentials: GET …/registry-auth: 503 secrets_unavailable: down",
      }),
    );
    expect(failure(events)).not.toHaveProperty("retryable");
    expect(n.api.asked).toHaveLength(REGISTRY_AUTH_TRIES);
    expect(n.engine.pulls).toEqual([]);

    const refused = node();
    refused.api.error = () =>
      new ControlPlaneError("rejected", "GET …: 401 unauthorized: wrong token", 401, "unauthorized");
    expect(failure(await refused.run())?.reason).toBe(
      "could not fetch registry credentials: GET …: 401 unauthorized: wrong token",
    );
    expect(refused.api.asked).toHaveLength(1);
  });

  it("never sends credentials to a registry other than the image's", async () => {
    const n = node();
    n.api.registryAuth = async () => ({ registry: "ghcr.io", credentials: ALICE });
    const events = await n.run();
    expect(failure(events)?.reason).toMatch(/credentials for ghcr.io, but .* is on registry.example.com/);
    expect(n.engine.pulls).toEqual([]);
  });

  it("pulls with credentials every time under `always`, adding nothing twice", async () => {
    const n = node({ pullPolicy: "always" });
    n.engine.registry = privateRegistry([ALICE]);
    await n.run({ credentials: ALICE });
    await n.run({ credentials: ALICE });
    expect(n.engine.pulls).toHaveLength(2);
    expect(n.state.imageRecord("sha256:private")?.fingerprints).toHaveLength(1);
  });
});

describe("a hung container engine", () => {
  /** A node whose engine calls have a 100 ms deadline, with the image cached; one placement's run. */
  function hungNode() {
    const n = node();
    n.engine.images.set(IMAGE, "sha256:public");
    const watchdog = new EngineWatchdog(n.engine, { timeoutMs: 100, clock: systemClock });
    n.ctx.engine = watchdog;
    const placement = Placement.parse(
      testPlacement({ placement_id: `p${counter++}`, job_id: "j", image: IMAGE, cpu_milli: 100 }),
    );
    const mine = () => n.events().filter((e) => e.placement_id === placement.placement_id);
    return { ...n, watchdog, placement, mine };
  }

  it("fails the placement, retryable, when the start is not answered, and keeps the container it could not remove for its retirement", async () => {
    const n = hungNode();
    n.engine.hung.add("start").add("remove");
    const run = new PlacementRun(n.ctx, n.placement);
    await run.done;
    expect(n.mine()).toEqual([
      expect.objectContaining({
        type: "failed",
        reason:
          'container start timed out: the container engine did not answer "start" within 0.1 s; the node is cordoned until its engine answers',
      }),
    ]);
    expect(failure(n.mine())).not.toHaveProperty("retryable");
    // It tried to remove the container; that hung too, so the run holds on to it.
    expect(n.engine.heldCalls()).toEqual(["start", "remove"]);
    expect(run.finished).toBe(true);
    expect(run.containerId).not.toBeNull();
    expect(n.watchdog.stuck()).toMatchObject({ operation: "start" });

    // The start happens late: nothing follows it, nothing is reported.
    n.engine.hung.clear();
    n.engine.release("start");
    await new Promise((r) => setTimeout(r, 50));
    expect(types(n.mine())).toEqual(["failed"]);
    // The placement leaves the desired set: retiring the run removes the container.
    await run.retire().removed;
    expect(n.engine.containerCount).toBe(0);
  });

  it("removes the container at once when the engine answers the remove after a start that timed out", async () => {
    const n = hungNode();
    n.engine.hung.add("start");
    const run = new PlacementRun(n.ctx, n.placement);
    await run.done;
    expect(failure(n.mine())?.reason).toMatch(/^container start timed out: /);
    expect(run.containerId).toBeNull();
    expect(n.engine.containerCount).toBe(0);
  });

  it("fails the placement, retryable, when the create is not answered", async () => {
    const n = hungNode();
    n.engine.hung.add("create");
    const run = new PlacementRun(n.ctx, n.placement);
    await run.done;
    expect(n.mine()).toEqual([
      expect.objectContaining({
        type: "failed",
        reason:
          'container create timed out: the container engine did not answer "create" within 0.1 s; the node is cordoned until its engine answers',
      }),
    ]);
    expect(failure(n.mine())).not.toHaveProperty("retryable");
    expect(n.engine.calls).not.toContain("start");
  });
});

describe("a stalled image pull", () => {
  /** A node whose pulls fail after 100 ms without progress, the image not cached, and whose pulls hang. */
  function stallingNode() {
    const n = node();
    const watchdog = new EngineWatchdog(n.engine, { timeoutMs: 60_000, pullStallMs: 100, clock: systemClock });
    n.ctx.engine = watchdog;
    n.engine.hung.add("pull");
    const pendingPulls = () => JSON.parse(n.stateFile()).pending_pulls as Record<string, number> | undefined;
    return { ...n, watchdog, pendingPulls };
  }

  it("fails the placement, retryable, with the reason; the node is not marked stuck, and a late end reports nothing", async () => {
    const n = stallingNode();
    const events = await n.run();
    expect(types(events)).toEqual(["pulling", "failed"]);
    expect(failure(events)).toMatchObject({
      reason: `image pull failed for ${IMAGE}: no progress for 0.1 s (registry or network stalled)`,
    });
    expect(failure(events)).not.toHaveProperty("retryable");
    expect(n.engine.calls).not.toContain("create");
    expect(n.watchdog.stuck()).toBeUndefined();
    expect(n.logs.map((l) => JSON.parse(l))).toContainEqual(
      expect.objectContaining({ level: "warn", msg: "placement failed", retryable: true }),
    );

    // The engine's pull was left running; it finishes: the image is cached, the placement stays failed.
    expect(n.engine.heldCalls()).toEqual(["pull"]);
    n.engine.release("pull");
    await until(() => n.logs.some((l) => l.includes("a stalled image pull finished after all")));
    expect(n.engine.images.get(IMAGE)).toBe(`sha256:${IMAGE}`);
    const all = n.events().filter((e) => e.placement_id === events[0]!.placement_id);
    expect(types(all)).toEqual(["pulling", "failed"]);
  });

  it("keeps a pull with credentials marked while the engine's pull goes on, and records it when it ends", async () => {
    const n = stallingNode();
    n.engine.registry = privateRegistry([ALICE]);
    n.engine.images.set("other/app:1", "sha256:other"); // cached, never seen public by this process
    const events = await n.run({ credentials: ALICE });
    expect(failure(events)?.reason).toBe(
      `image pull failed for ${IMAGE}: no progress for 0.1 s (registry or network stalled)`,
    );
    // The engine may still put the image here: until it says, an image without a record is not taken for public.
    expect(n.pendingPulls()).toEqual({ [IMAGE]: expect.any(Number) });
    expect(n.images.unsettled).toBe(true);
    expect(n.images.isPublic("sha256:other")).toBe(false);

    n.engine.release("pull");
    await until(() => n.state.imageRecord("sha256:private") !== undefined);
    expect(n.state.imageRecord("sha256:private")).toMatchObject({
      ref: IMAGE,
      fingerprints: [n.images.fingerprint({ registry: REGISTRY, credentials: ALICE })],
    });
    expect(n.pendingPulls()).toEqual({});
    expect(n.images.unsettled).toBe(false);
    expect(n.stateFile()).not.toContain(ALICE.password);
  });

  it("drops the mark of a stalled pull with credentials once the engine's pull fails", async () => {
    const n = stallingNode();
    await n.run({ credentials: ALICE });
    expect(n.pendingPulls()).toEqual({ [IMAGE]: expect.any(Number) });
    n.engine.release("pull", new EngineError("registry_unreachable", `read tcp: reset (${ALICE.password})`));
    await until(() => n.logs.some((l) => l.includes("a stalled image pull ended with an error")));
    expect(n.pendingPulls()).toEqual({});
    expect(n.images.unsettled).toBe(false);
    expect(n.state.imageRecordIds()).toEqual([]);
    expect(n.logs.join("\n")).not.toContain(ALICE.password);
  });
});

/** Waits (real time, briefly) for something a background promise does. */
async function until(condition: () => boolean, ms = 2_000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("private image records", () => {
  it("finds the record under any name of the image (engine id), e.g. with docker.io/ or a digest", async () => {
    const n = node();
    n.engine.registry = privateRegistry([ALICE]);
    await n.run({ image: "org/app:1", credentials: ALICE });
    n.engine.images.set("docker.io/org/app:1", "sha256:private");
    n.engine.images.set("org/app@sha256:abc", "sha256:private");
    for (const image of ["docker.io/org/app:1", "org/app@sha256:abc"]) {
      const asked = n.api.asked.length;
      const events = await n.run({ image, credentials: null });
      expect(n.api.asked).toHaveLength(asked + 1);
      expect(failure(events)?.reason).toMatch(/needs registry credentials/);
    }
  });

  it("while a pull with credentials runs, or one an earlier process left, only images seen public before count as public", async () => {
    const n = node();
    n.engine.images.set(IMAGE, "sha256:x");
    const fp = n.images.fingerprint({ registry: REGISTRY, credentials: ALICE });
    expect(n.images.isPublic("sha256:x")).toBe(true);
    const pull = n.images.startPull("other/image:1", fp);
    // sha256:x was here, public, before that pull began: it stays public; an image not seen yet may be its result.
    expect(n.images.isPublic("sha256:x")).toBe(true);
    expect(n.images.isPublic("sha256:new")).toBe(false);
    expect(n.images.mayStart("sha256:new", ANONYMOUS)).toBe(false);
    expect(JSON.parse(n.stateFile()).pending_pulls).toEqual({ "other/image:1": expect.any(Number) });

    // The agent stops during that pull; the engine finishes it.
    n.engine.images.set("other/image:1", "sha256:y");
    const restarted = node({ engine: n.engine, dataDir: n.dataDir });
    expect(restarted.images.isPublic("sha256:x")).toBe(false);
    await restarted.images.start();
    expect(restarted.images.isPublic("sha256:x")).toBe(true);
    // Whose credentials pulled it is unknown: private, with no fingerprint: everyone pulls once more.
    expect(restarted.state.imageRecord("sha256:y")).toMatchObject({ ref: "other/image:1", fingerprints: [] });
    expect(restarted.images.mayStart("sha256:y", fp)).toBe(false);
    expect(JSON.parse(restarted.stateFile()).pending_pulls).toEqual({});
    expect(pull).toBeDefined(); // the stopped process's ticket, never settled
  });

  it("forgets images the engine no longer has at start, and keeps at most MAX_FINGERPRINTS per image", async () => {
    const n = node();
    n.engine.images.set("a:1", "sha256:a");
    for (let i = 0; i < MAX_FINGERPRINTS + 3; i++) {
      const fp = n.images.fingerprint({ registry: "docker.io", credentials: { username: `u${i}`, password: "pw" } });
      n.images.startPull("a:1", fp).succeeded("sha256:a");
    }
    const fingerprints = n.state.imageRecord("sha256:a")?.fingerprints ?? [];
    expect(fingerprints).toHaveLength(MAX_FINGERPRINTS);
    expect(fingerprints.at(-1)).toBe(
      n.images.fingerprint({
        registry: "docker.io",
        credentials: { username: `u${MAX_FINGERPRINTS + 2}`, password: "pw" },
      }),
    );
    n.images.startPull("b:1", fingerprints[0]!).succeeded("sha256:b"); // "b:1" is not in the engine
    expect(n.state.imageRecordIds().sort()).toEqual(["sha256:a", "sha256:b"]);

    const restarted = node({ engine: n.engine, dataDir: n.dataDir });
    await restarted.images.start();
    expect(restarted.state.imageRecordIds()).toEqual(["sha256:a"]);
  });

  it("fingerprints differ by registry, user name, password and node; anonymous is anonymous", () => {
    const a = node().images;
    const b = node().images;
    const fp = (images: PrivateImages, registry: string, username: string, password: string) =>
      images.fingerprint({ registry, credentials: { username, password } });
    const all = new Set([
      fp(a, "r", "u", "p"),
      fp(a, "r2", "u", "p"),
      fp(a, "r", "u2", "p"),
      fp(a, "r", "u", "p2"),
      fp(a, "r", "u:", "p"),
      fp(a, "r", "u", ":p"),
      fp(b, "r", "u", "p"),
    ]);
    expect(all.size).toBe(7);
    expect(fp(a, "r", "u", "p")).toBe(fp(a, "r", "u", "p"));
    expect(a.fingerprint({ registry: "r", credentials: null })).toBe(ANONYMOUS);
  });
});

describe("an exit the engine explains late", () => {
  const exited = (events: PlacementEvent[]) =>
    events.find((e) => e.type === "exited") as Extract<PlacementEvent, { type: "exited" }> | undefined;

  it("reports a SIGKILL as OOM-killed when the engine records the OOM kill only after the exit is seen", async () => {
    const n = node();
    n.engine.images.set(IMAGE, "sha256:app");
    // The first two looks at the exited container do not say OOM yet; the third does.
    n.engine.exitsAs.set(IMAGE, { exitCode: 137, oomAfterInspects: 2 });
    expect(exited(await n.run())).toMatchObject({ exit_code: 137, oom_killed: true, signal: "SIGKILL" });
  });

  it("reports a SIGKILL the engine never calls an OOM kill as a plain SIGKILL after four more looks; other exits at once", async () => {
    const inspects = (engine: FakeEngine) => engine.calls.filter((c) => c === "inspect").length;
    const n = node();
    n.engine.images.set(IMAGE, "sha256:app");
    n.engine.exitsAs.set(IMAGE, { exitCode: 137, oomAfterInspects: 1_000 });
    expect(exited(await n.run())).toMatchObject({ exit_code: 137, oom_killed: false, signal: "SIGKILL" });
    const other = node();
    other.engine.images.set(IMAGE, "sha256:app");
    other.engine.exitsAs.set(IMAGE, { exitCode: 3, oomAfterInspects: 1_000 });
    expect(exited(await other.run())).toMatchObject({ exit_code: 3, oom_killed: false });
    expect(inspects(n.engine) - inspects(other.engine)).toBe(4);
  });
});

/** A node on an engine whose containers run until stopped (test/live-engine.ts), the image cached; one placement. */
function liveNode() {
  const engine = new LiveEngine();
  const n = node({ engine });
  engine.images.set(IMAGE, "sha256:public");
  const placement = Placement.parse(
    testPlacement({ placement_id: `p${counter++}`, job_id: "j", image: IMAGE, cpu_milli: 100, grace_period_ms: 100 }),
  );
  const mine = () => n.events().filter((e) => e.placement_id === placement.placement_id);
  return { ...n, engine, placement, mine };
}

describe("a placement that leaves the node while its container is being started", () => {
  it("abandoned while the start is on its way: stops the container once the start returns, reporting nothing", async () => {
    const n = liveNode();
    n.engine.hung.add("start");
    const run = new PlacementRun(n.ctx, n.placement);
    await until(() => n.engine.heldCalls().includes("start"), 5_000);
    run.abandon();
    n.engine.hung.clear();
    n.engine.release("start");
    await until(() => n.engine.calls.includes("stop"), 5_000);
    await run.done;
    expect(n.engine.running()).toEqual([]);
    expect(n.mine()).toEqual([]);
  });

  it("abandoned once its container runs (listed before it existed): stops it at once, not after the orphan grace", async () => {
    const n = liveNode();
    const run = new PlacementRun(n.ctx, n.placement);
    await until(() => n.engine.calls.includes("wait"), 5_000);
    run.abandon();
    await until(() => n.engine.calls.includes("stop"), 5_000);
    await run.done;
    expect(n.engine.running()).toEqual([]);
    expect(types(n.mine())).toEqual(["running"]);
  });

  it("retired while the start is on its way: stops the container once the start returns, then removes it", async () => {
    const n = liveNode();
    n.engine.hung.add("start");
    const run = new PlacementRun(n.ctx, n.placement);
    await until(() => n.engine.heldCalls().includes("start"), 5_000);
    const { stopped, removed } = run.retire();
    await stopped; // nothing to stop yet: the reconcile is not held up by the start
    n.engine.hung.clear();
    n.engine.release("start");
    await until(() => n.engine.containerCount === 0, 5_000);
    await removed;
    expect(n.engine.calls).toContain("stop");
    expect(n.mine()).toEqual([]);
  });

  it("retired while its stop fails: stops it again, with backoff, until it has exited", async () => {
    const n = liveNode();
    const run = new PlacementRun(n.ctx, n.placement);
    await until(() => n.engine.calls.includes("wait"), 5_000);
    n.engine.failNext("stop", 3);
    const { stopped, removed } = run.retire();
    await expect(stopped).rejects.toThrow(/ECONNREFUSED/);
    await until(() => n.engine.containerCount === 0, 5_000);
    await removed;
    expect(n.engine.calls.filter((c) => c === "stop")).toHaveLength(4);
  });
});

describe("an engine hiccup on an inspect", () => {
  it("right after the start: the run goes on and reports the exit, not an agent error", async () => {
    const n = liveNode();
    n.engine.failNext("inspect", 2);
    const run = new PlacementRun(n.ctx, n.placement);
    await until(() => n.engine.calls.includes("wait"), 5_000);
    n.engine.exit(n.engine.running()[0]!, 0);
    await run.done;
    expect(n.mine()).toEqual([
      expect.objectContaining({ type: "running" }),
      expect.objectContaining({ type: "exited", exit_code: 0 }),
    ]);
  });

  it("after the exit: reports the exit as it was, not an agent error to retry", async () => {
    const n = liveNode();
    const run = new PlacementRun(n.ctx, n.placement);
    await until(() => n.engine.calls.includes("wait"), 5_000);
    const id = n.engine.running()[0]!;
    // Every look at the exited container but waitForExit's first fails twice before answering.
    let looks = 0;
    n.engine.fault = (method) =>
      method === "inspect" && !n.engine.running().includes(id) && [2, 3].includes(++looks)
        ? new EngineError("engine", "context deadline exceeded")
        : undefined;
    n.engine.exit(id, 0);
    await run.done;
    expect(types(n.mine())).toEqual(["running", "exited"]);
    expect(n.mine()[1]).toMatchObject({ exit_code: 0 });
  });
});

describe("cancelled after its container was created, and the remove fails", () => {
  it("reports one outcome (stopped before it started) and keeps the container for its retirement", async () => {
    const n = liveNode();
    n.engine.hung.add("create");
    const run = new PlacementRun(n.ctx, n.placement);
    await until(() => n.engine.heldCalls().includes("create"), 5_000);
    run.update({ ...n.placement, desired: "stopped" });
    n.engine.failNext("remove");
    n.engine.hung.clear();
    n.engine.release("create");
    await run.done;
    expect(n.mine()).toEqual([expect.objectContaining({ type: "exited", exit_code: -1, stopped_by: "cancel" })]);
    expect(n.state.placement(n.placement.placement_id).finished).toBe("exited");
    expect(n.engine.calls).not.toContain("start");
    expect(run.containerId).not.toBeNull();
    // The placement leaves the desired set: retiring the run removes the container.
    await run.retire().removed;
    expect(n.engine.containerCount).toBe(0);
  });
});

describe("a data folder that cannot be written", () => {
  it("ends the run (done never rejects) and keeps its outcome in memory for delivery", async () => {
    const n = node();
    // Writes fail from now on (as on a full or read-only disk): the temp files cannot be opened.
    mkdirSync(join(n.dataDir, "state.json.tmp"));
    mkdirSync(join(n.dataDir, "outbox.json.tmp"));
    n.engine.registry = () => {
      throw new EngineError("image_not_found", "manifest unknown");
    };
    const placement = Placement.parse(testPlacement({ placement_id: `p${counter++}`, job_id: "j", image: IMAGE }));
    n.api.answers.set(placement.placement_id, { registry: REGISTRY, credentials: null });
    const run = new PlacementRun(n.ctx, placement);
    await expect(run.done).resolves.toBeUndefined();
    expect(n.ctx.outbox.has(`${placement.placement_id}/failed`)).toBe(true);
    expect(n.state.placement(placement.placement_id).finished).toBe("failed");
    expect(n.logs.some((l) => l.includes("could not write outbox.json"))).toBe(true);
  });
});

describe("a kill deadline and a stepped clock", () => {
  it("stops the container when the wall clock reaches its deadline, also by a step forward", async () => {
    // NTP steps the clock an hour forward while the job runs: its deadline, an hour on, has come.
    let wall = Date.now();
    const n = node({ engine: new LiveEngine(), clock: { ...systemClock, now: () => wall } });
    const placement = Placement.parse(
      testPlacement({
        placement_id: `p${counter++}`,
        job_id: "j",
        image: IMAGE,
        cpu_milli: 100,
        kill_deadline: wall + 3_600_000,
      }),
    );
    n.api.answers.set(placement.placement_id, { registry: registryOf(IMAGE), credentials: null });
    const run = new PlacementRun(n.ctx, placement);
    for (let i = 0; i < 200 && !types(n.events()).includes("running"); i++) await systemClock.sleep(10);
    expect(types(n.events())).toContain("running");
    wall += 3_600_000;
    const stopped = await Promise.race([
      run.done.then(() => true),
      systemClock.sleep(DEADLINE_RECHECK_MS + 3_000).then(() => false),
    ]);
    expect(stopped).toBe(true);
    expect(n.engine.calls).toContain("stop");
  });
});

describe("a wall clock stepped back during a pull", () => {
  function steppedClock() {
    let wall = Date.now();
    let mono = 0;
    const clock: Clock = { ...systemClock, now: () => wall, monotonic: () => mono };
    return {
      clock,
      /** NTP or a resumed VM steps the wall clock an hour back: no time passes. */
      stepBack: () => {
        wall -= 3_600_000;
      },
      pass: (ms: number) => {
        wall += ms;
        mono += ms;
      },
    };
  }

  it("reports the pull's progress at its interval, not once the wall clock has caught up", async () => {
    const { clock, stepBack, pass } = steppedClock();
    const n = node({ clock });
    n.ctx.pullProgressIntervalMs = 2_000;
    n.engine.pull = async (ref, onProgress) => {
      onProgress("Downloading 1 MB / 9 MB"); // within the interval of "pulling …": not reported
      stepBack();
      pass(2_000);
      onProgress("Downloading 5 MB / 9 MB");
      n.engine.images.set(ref, "sha256:app");
    };
    expect(pulling(await n.run())).toEqual([`pulling ${IMAGE}`, "Downloading 5 MB / 9 MB", `pulled ${IMAGE}`]);
  });

  it("prunes the private image records again after the prune interval, not once the wall clock has caught up", async () => {
    const { clock, stepBack, pass } = steppedClock();
    const n = node();
    const images = new PrivateImages(n.state, n.engine, clock, () => {});
    await images.start();
    // The record of an image removed by hand since (the engine no longer has it).
    n.state.setImageRecord("sha256:gone", { ref: "r/gone:1", fingerprints: ["sha256:fp"], at: clock.now() });
    n.engine.images.set(IMAGE, "sha256:private");
    const pullWithCredentials = async () => {
      images.startPull(IMAGE, "sha256:fp").succeeded("sha256:private");
      await new Promise((r) => setImmediate(r)); // the prune, if any, asks the fake engine only
    };
    stepBack();
    pass(PRUNE_INTERVAL_MS - 1);
    await pullWithCredentials();
    expect(n.state.imageRecord("sha256:gone")).toBeDefined();
    pass(1);
    await pullWithCredentials();
    expect(n.state.imageRecord("sha256:gone")).toBeUndefined();
  });
});

describe("the log of a stopped container whose stream has not ended", () => {
  /**
   * Ships a stopped container's log (silence limit 400 ms, first entry 2 s, open 600 ms) from a
   * stream the test feeds and ends; the follow is asked for after the exit unless `exited` says when
   * it comes, and the engine answers the request at once unless `opened` says when.
   */
  function stoppedContainerLog(
    opts: {
      shipping?: typeof DEFAULT_LOG_SHIPPER;
      firstEntryMs?: number;
      openMs?: number;
      exited?: Promise<void>;
      opened?: Promise<void>;
      /** The follow resumes from a cursor (lines shipped before), as after a cut or a restart. */
      fromCursor?: boolean;
    } = {},
  ) {
    const { shipping = DEFAULT_LOG_SHIPPER, firstEntryMs = 2_000, openMs = 600, exited = Promise.resolve() } = opts;
    const n = node();
    if (opts.fromCursor) {
      n.state.updatePlacement("p-tail", { log: { seq: 0, ts: new Date(1_699_999_999_999).toISOString(), same_ts: 1 } });
    }
    let sink: (entry: LogEntry) => void = () => {};
    let end: (how: LogEnd) => void = () => {};
    let stopped = false;
    n.engine.followLogs = async (_id, _since, s) => {
      sink = s;
      await opts.opened;
      const ended = new Promise<LogEnd>((done) => {
        end = done;
      });
      const stop = () => {
        stopped = true;
        end("cut");
      };
      return { pause() {}, resume() {}, stop, ended };
    };
    const shipper = new LogShipper(() => {}, n.ctx.log, shipping);
    let shipped = false;
    const ctx = {
      ...n.ctx,
      shipper,
      logSilenceAfterExitMs: 400,
      logFirstEntryAfterExitMs: firstEntryMs,
      logOpenAfterExitMs: openMs,
    };
    void shipContainerLog(ctx, "p-tail", "c-tail", { signal: new AbortController().signal, exited }).then(() => {
      shipped = true;
    });
    const write = (i: number) =>
      sink({ stream: "stdout", ts: new Date(1_700_000_000_000 + i).toISOString(), text: `line ${i}` });
    const logged = (text: string) => n.logs.map((l) => JSON.parse(l)).find((l) => l.msg.includes(text));
    /** The limit the agent logged giving up after, if it did. */
    const gaveUpAfter = () => logged("went silent")?.silence_ms as number | undefined;
    /** How long the agent logged waiting for the engine to open the follow, if it gave up on it. */
    const gaveUpOpeningAfter = () => logged("did not open")?.waited_ms as number | undefined;
    return {
      n,
      shipper,
      write,
      end: (how: LogEnd) => end(how),
      shipped: () => shipped,
      stopped: () => stopped,
      gaveUpAfter,
      gaveUpOpeningAfter,
    };
  }

  /** A promise and what resolves it (Promise.withResolvers, which Node 20 does not have). */
  function resolvable() {
    let resolve = () => {};
    const promise = new Promise<void>((done) => {
      resolve = done;
    });
    return { promise, resolve };
  }

  it("follows it to its end while the engine still gives lines, however long past the silence limit", async () => {
    const f = stoppedContainerLog();
    await systemClock.sleep(50);
    for (let i = 0; i < 10; i++) {
      f.write(i);
      await systemClock.sleep(100); // 1 s of lines, never 400 ms without one
    }
    expect(f.shipped()).toBe(false);
    f.end("complete");
    await systemClock.sleep(50);
    expect(f.shipped()).toBe(true);
    expect(f.shipper.pending("p-tail")).toBe(10);
    expect(f.n.logs.some((l) => l.includes("went silent"))).toBe(false);
  });

  it("does not count the time it is held for the shipper's room as the engine's silence", async () => {
    // One line fills the queue, and nothing ships it: the follow stays paused.
    const f = stoppedContainerLog({ shipping: { ...DEFAULT_LOG_SHIPPER, maxLines: 1 } });
    await systemClock.sleep(50);
    f.write(0);
    await systemClock.sleep(1_000);
    expect(f.shipped()).toBe(false);
    f.end("complete");
    await systemClock.sleep(50);
    expect(f.shipped()).toBe(true);
    expect(f.n.logs.some((l) => l.includes("went silent"))).toBe(false);
  });

  it("stops following it once it has been silent for the limit", async () => {
    const f = stoppedContainerLog();
    await systemClock.sleep(50);
    f.write(0);
    await systemClock.sleep(800);
    expect(f.shipped()).toBe(true);
    expect(f.shipper.pending("p-tail")).toBe(1);
    expect(f.n.logs.some((l) => l.includes("went silent"))).toBe(true);
  });

  it("waits longer than the silence limit for the first line of a follow opened after the exit", async () => {
    // The engine reads a long log up to `since` before it sends anything: 900 ms here, over twice
    // the silence limit but within the first entry's.
    const f = stoppedContainerLog({ fromCursor: true });
    await systemClock.sleep(900);
    expect(f.shipped()).toBe(false);
    for (let i = 0; i < 5; i++) {
      f.write(i);
      await systemClock.sleep(100);
    }
    f.end("complete");
    await systemClock.sleep(50);
    expect([f.shipped(), f.shipper.pending("p-tail"), f.gaveUpAfter()]).toEqual([true, 5, undefined]);
  });

  it("lets a follow opened after the exit go once it has given nothing for the first entry's limit", async () => {
    const f = stoppedContainerLog({ fromCursor: true });
    await systemClock.sleep(1_500);
    expect(f.shipped()).toBe(false);
    await systemClock.sleep(1_000);
    expect([f.shipped(), f.shipper.pending("p-tail"), f.gaveUpAfter()]).toEqual([true, 0, 2_000]);
  });

  it("gives a follow opened from the start, given nothing, the silence limit from the exit, however recently it opened", async () => {
    // A container's first follow, opened as it started: a silent container that exits soon after
    // has no log the engine must read first, so its exit is not held for the first entry's limit.
    const exit = resolvable();
    const f = stoppedContainerLog({ exited: exit.promise });
    await systemClock.sleep(100);
    exit.resolve();
    await systemClock.sleep(200);
    expect(f.shipped()).toBe(false);
    await systemClock.sleep(400);
    expect([f.shipped(), f.gaveUpAfter()]).toEqual([true, 400]);
  });

  it("gives a follow opened long before the exit and given nothing the silence limit from the exit", async () => {
    // The container never wrote a line: its follow has been open for longer than the first entry's limit.
    let exit = () => {};
    const exited = new Promise<void>((done) => {
      exit = done;
    });
    const f = stoppedContainerLog({ firstEntryMs: 500, exited });
    await systemClock.sleep(700);
    exit();
    await systemClock.sleep(200);
    expect(f.shipped()).toBe(false);
    await systemClock.sleep(400);
    expect([f.shipped(), f.gaveUpAfter()]).toEqual([true, 400]);
  });

  it("gives up the rest of the log once the engine has not opened its follow for the open limit, and ships nothing from it later", async () => {
    const answer = resolvable();
    const f = stoppedContainerLog({ opened: answer.promise });
    await systemClock.sleep(450); // past the silence limit, within the open's
    expect(f.shipped()).toBe(false);
    await systemClock.sleep(400);
    expect(f.shipped()).toBe(true);
    expect(f.gaveUpOpeningAfter()).toBeGreaterThanOrEqual(600);
    expect(f.gaveUpOpeningAfter()).toBeLessThan(800);
    // The engine answers after all, with lines before and after its answer.
    f.write(0);
    answer.resolve();
    await systemClock.sleep(10);
    f.write(1);
    await systemClock.sleep(50);
    expect([f.stopped(), f.shipper.pending("p-tail"), f.gaveUpAfter()]).toEqual([true, 0, undefined]);
  });

  it("follows a log whose open the engine answers within the open limit as before", async () => {
    const answer = resolvable();
    const f = stoppedContainerLog({ opened: answer.promise });
    await systemClock.sleep(450);
    answer.resolve();
    await systemClock.sleep(10);
    for (let i = 0; i < 3; i++) f.write(i);
    await systemClock.sleep(200);
    expect(f.shipped()).toBe(false);
    f.end("complete");
    await systemClock.sleep(50);
    expect([f.shipped(), f.shipper.pending("p-tail"), f.stopped()]).toEqual([true, 3, false]);
    expect([f.gaveUpAfter(), f.gaveUpOpeningAfter()]).toEqual([undefined, undefined]);
  });

  it("waits for an open asked before the exit until the exit, then the silence limit if that ends later", async () => {
    const answer = resolvable();
    const exit = resolvable();
    const f = stoppedContainerLog({ openMs: 500, exited: exit.promise, opened: answer.promise });
    await systemClock.sleep(700); // past the open limit, but the container runs
    expect(f.shipped()).toBe(false);
    exit.resolve();
    await systemClock.sleep(200);
    expect(f.shipped()).toBe(false);
    await systemClock.sleep(400);
    expect(f.shipped()).toBe(true);
    expect(f.gaveUpOpeningAfter()).toBeGreaterThanOrEqual(1_100);
    answer.resolve();
    await systemClock.sleep(10);
    expect(f.stopped()).toBe(true);
  });

  it("reports the exit of a container whose log the engine never opens", async () => {
    const n = node();
    // The follow is asked for as the container starts, and its exit comes at once.
    n.ctx.logSilenceAfterExitMs = 200;
    n.ctx.logOpenAfterExitMs = 300;
    n.engine.hung.add("followLogs");
    const began = performance.now();
    const events = await n.run();
    expect(performance.now() - began).toBeGreaterThanOrEqual(300);
    expect(performance.now() - began).toBeLessThan(1_000);
    expect(types(events).filter((t) => t !== "pulling")).toEqual(["running", "exited"]);
    expect(n.logs.some((l) => l.includes("did not open the stopped container's log stream"))).toBe(true);
    n.engine.release("followLogs");
  });
});
