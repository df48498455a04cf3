/**
 * TEST DOUBLE: an in-memory ContainerEngine for the agent's unit tests. Images are a map from
 * reference to id, and a pull asks `registry` (the test's stand-in for the registry) what the
 * reference is now, with the credentials sent; containers exit with code 0 as soon as they start.
 */
import {
  type ContainerDetails,
  type ContainerEngine,
  type ContainerSpec,
  type ContainerSummary,
  EngineError,
  type LogEntry,
  type LogFollow,
  type RegistryCredentials,
  type StatsSample,
} from "../docker/engine";

interface FakeContainer {
  id: string;
  spec: ContainerSpec;
  state: "created" | "exited";
  startedAt: number | null;
  finishedAt: number | null;
}

export class FakeEngine implements ContainerEngine {
  /** What the engine has: reference → image id. */
  readonly images = new Map<string, string>();
  /** Every pull asked for, with the credentials it sent. */
  readonly pulls: { ref: string; credentials?: RegistryCredentials }[] = [];
  /** Every call by method name, in order. */
  readonly calls: string[] = [];
  /**
   * The registry: the image id the reference names, for these credentials; throw an EngineError
   * (e.g. image_unauthorized, registry_unreachable) to refuse. Default: anyone may read anything.
   */
  registry: (ref: string, credentials?: RegistryCredentials) => string = (ref) => `sha256:${ref}`;
  private readonly containers = new Map<string, FakeContainer>();
  private next = 0;

  async ping(): Promise<void> {
    this.calls.push("ping");
  }

  async list(labels: Record<string, string>): Promise<ContainerSummary[]> {
    this.calls.push("list");
    return [...this.containers.values()]
      .filter((c) => Object.entries(labels).every(([k, v]) => c.spec.labels[k] === v))
      .map((c) => ({ id: c.id, name: c.spec.name, state: c.state, labels: c.spec.labels }));
  }

  async inspect(id: string): Promise<ContainerDetails | null> {
    this.calls.push("inspect");
    const c = this.containers.get(id);
    if (!c) return null;
    return {
      id: c.id,
      name: c.spec.name,
      state: c.state,
      labels: c.spec.labels,
      running: false,
      exitCode: 0,
      oomKilled: false,
      error: "",
      startedAt: c.startedAt,
      finishedAt: c.finishedAt,
      env: c.spec.env,
      memoryBytes: c.spec.memoryBytes,
      memorySwapBytes: c.spec.memoryBytes,
      nanoCpus: c.spec.nanoCpus,
      pidsLimit: c.spec.pidsLimit,
      init: true,
      privileged: false,
      gpuDeviceIds: c.spec.gpuDeviceIds,
      networkMode: "default",
      address: null,
    };
  }

  async hasImage(ref: string): Promise<boolean> {
    return (await this.imageId(ref)) !== null;
  }

  async imageId(ref: string): Promise<string | null> {
    this.calls.push("imageId");
    return this.images.get(ref) ?? ([...this.images.values()].includes(ref) ? ref : null);
  }

  async pull(ref: string, onProgress: (progress: string) => void, credentials?: RegistryCredentials): Promise<void> {
    this.calls.push("pull");
    this.pulls.push({ ref, ...(credentials ? { credentials } : {}) });
    const id = this.registry(ref, credentials);
    onProgress(`Pulling from ${ref}`);
    this.images.set(ref, id);
  }

  async create(spec: ContainerSpec): Promise<string> {
    this.calls.push("create");
    if (![...this.images.keys()].includes(spec.image)) throw new EngineError("image_not_found", "No such image");
    if ([...this.containers.values()].some((c) => c.spec.name === spec.name)) {
      throw new EngineError("conflict", `name ${spec.name} taken`);
    }
    const id = `c${this.next++}`;
    this.containers.set(id, { id, spec, state: "created", startedAt: null, finishedAt: null });
    return id;
  }

  async start(id: string): Promise<void> {
    this.calls.push("start");
    const c = this.containers.get(id);
    if (!c) throw new EngineError("not_found", "no such container");
    c.state = "exited";
    c.startedAt = Date.now();
    c.finishedAt = Date.now();
  }

  async wait(): Promise<void> {
    this.calls.push("wait");
  }

  async stop(): Promise<void> {
    this.calls.push("stop");
  }

  async remove(id: string): Promise<void> {
    this.calls.push("remove");
    this.containers.delete(id);
  }

  async followLogs(_id: string, _since: string | null, _sink: (entry: LogEntry) => void): Promise<LogFollow> {
    this.calls.push("followLogs");
    return { pause() {}, resume() {}, stop() {}, ended: Promise.resolve() };
  }

  async stats(): Promise<StatsSample | null> {
    return null;
  }

  /** Containers made so far (any state). */
  get containerCount(): number {
    return this.containers.size;
  }
}
