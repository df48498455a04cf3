/**
 * TEST DOUBLE: the fake engine (fake-engine.ts), but a started container runs until it is stopped,
 * removed or told to `exit`, as a real one does: `wait` waits for that, the lines it writes
 * (`writeLog`) reach its log's followers, and those streams can be cut while it runs (`cutLogs`,
 * as a restart of the engine does, live-restore or not). `fault` makes chosen calls fail, as an
 * engine hiccup does; `hung` and `release` hold calls as in the fake engine. `logsOutliveExit`
 * leaves the log streams of an exited container open, silent, as a stuck engine does.
 */
import {
  type ContainerDetails,
  type ContainerEngine,
  type ContainerSpec,
  type ContainerSummary,
  EngineError,
  type LogEnd,
  type LogEntry,
  type LogFollow,
} from "../docker/engine";
import { FakeEngine } from "./fake-engine";

interface Life {
  state: "running" | "exited";
  exitCode: number;
  finishedAt: number | null;
  logs: LogEntry[];
  followers: Set<{ sink: (entry: LogEntry) => void; end: (how: LogEnd) => void }>;
  exits: Set<() => void>;
}

export const ENGINE_HICCUP = () => new EngineError("engine", "connect ECONNREFUSED /var/run/docker.sock");

export class LiveEngine extends FakeEngine {
  private readonly lives = new Map<string, Life>();
  /** Instead of answering, a call of `method` on container `id` throws the error this returns, if any. */
  fault: (method: keyof ContainerEngine, id: string) => Error | undefined = () => undefined;
  /** Log streams never end by themselves once their container has exited (they can still be stopped). */
  logsOutliveExit = false;
  private tick = 0;

  /** The next `times` calls of `method` fail (the fault in place otherwise). */
  failNext(method: keyof ContainerEngine, times = 1, error: () => Error = ENGINE_HICCUP): void {
    const before = this.fault;
    let left = times;
    this.fault = (m, id) => {
      if (m === method && left > 0) {
        left--;
        return error();
      }
      return before(m, id);
    };
  }

  /** A container started outside the agent under test (one a previous agent process left running). */
  async run(spec: ContainerSpec): Promise<string> {
    this.images.set(spec.image, this.images.get(spec.image) ?? `sha256:${spec.image}`);
    const id = await this.create(spec);
    await this.start(id);
    return id;
  }

  /** Ids of the containers that run now. */
  running(): string[] {
    return [...this.lives].filter(([, life]) => life.state === "running").map(([id]) => id);
  }

  writeLog(id: string, text: string, stream: LogEntry["stream"] = "stdout"): void {
    const life = this.lives.get(id);
    if (life?.state !== "running") return;
    // Fixed width, nanoseconds from a counter: entries order and resume as the engine's do.
    const ts = `${new Date().toISOString().slice(0, -1)}${String(this.tick++).padStart(6, "0")}Z`;
    const entry: LogEntry = { stream, ts, text };
    life.logs.push(entry);
    for (const f of life.followers) f.sink(entry);
  }

  /** Ends every follow of the container's log; the container runs on. */
  cutLogs(id: string, how: LogEnd = "cut"): void {
    for (const f of [...(this.lives.get(id)?.followers ?? [])]) f.end(how);
  }

  exit(id: string, exitCode: number): void {
    const life = this.lives.get(id);
    if (life?.state !== "running") return;
    life.state = "exited";
    life.exitCode = exitCode;
    life.finishedAt = Date.now();
    for (const done of life.exits) done();
    life.exits.clear();
    if (!this.logsOutliveExit) this.cutLogs(id, "complete");
  }

  private failIf(method: keyof ContainerEngine, id: string): void {
    const error = this.fault(method, id);
    if (!error) return;
    this.calls.push(method);
    throw error;
  }

  override async start(id: string): Promise<void> {
    this.failIf("start", id);
    await super.start(id);
    this.lives.set(id, {
      state: "running",
      exitCode: 0,
      finishedAt: null,
      logs: [],
      followers: new Set(),
      exits: new Set(),
    });
  }

  override async list(labels: Record<string, string>): Promise<ContainerSummary[]> {
    this.failIf("list", "");
    return (await super.list(labels)).map((c) => {
      const life = this.lives.get(c.id);
      return life ? { ...c, state: life.state } : c;
    });
  }

  override async inspect(id: string): Promise<ContainerDetails | null> {
    this.failIf("inspect", id);
    const details = await super.inspect(id);
    const life = this.lives.get(id);
    if (!details || !life) return details;
    return {
      ...details,
      state: life.state,
      running: life.state === "running",
      exitCode: life.exitCode,
      finishedAt: life.finishedAt,
    };
  }

  override async wait(id?: string, signal?: AbortSignal): Promise<void> {
    this.failIf("wait", id ?? "");
    await super.wait();
    const life = id ? this.lives.get(id) : undefined;
    if (life?.state !== "running" || signal?.aborted) return;
    await new Promise<void>((done) => {
      life.exits.add(done);
      signal?.addEventListener("abort", () => done(), { once: true });
    });
  }

  override async stop(id?: string): Promise<void> {
    this.failIf("stop", id ?? "");
    await super.stop();
    if (id) this.exit(id, 143);
  }

  override async remove(id: string): Promise<void> {
    this.failIf("remove", id);
    this.exit(id, 137);
    await super.remove(id);
    this.lives.delete(id);
  }

  override async followLogs(id: string, since: string | null, sink: (entry: LogEntry) => void): Promise<LogFollow> {
    this.failIf("followLogs", id);
    const quiet = await super.followLogs(id, since, sink);
    const life = this.lives.get(id);
    if (!life) return quiet;
    for (const entry of life.logs) if (since === null || entry.ts >= since) sink(entry);
    let end!: (how: LogEnd) => void;
    const ended = new Promise<LogEnd>((done) => {
      end = done;
    });
    const follower = {
      sink,
      end: (how: LogEnd) => {
        life.followers.delete(follower);
        end(how);
      },
    };
    if (life.state === "running" || this.logsOutliveExit) life.followers.add(follower);
    else end("complete");
    return { pause() {}, resume() {}, stop: () => follower.end("cut"), ended };
  }
}
