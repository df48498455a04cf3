/**
 * Which cached images a placement may start from without asking the registry, modelled on
 * Kubernetes' KEP-2535 ("ensure secret pulled images"). An image this node pulled with an
 * account's registry credentials is private: another placement starts from the cached copy only if
 * it comes with the same credentials (same fingerprint); any other placement pulls again, with its
 * own credentials or none, so the registry decides whether its account may read the image. An
 * anonymous pull that succeeds shows the image is public: its record goes.
 *
 * The record is kept in the agent's state file, by the engine's image id (so that another name for
 * the same image, `docker.io/org/app:1` for `org/app:1` or a digest, finds it too), and holds
 * fingerprints only: sha256 of a per-node salt, the registry, the user name and the password. The
 * password itself is never stored or logged.
 *
 * Bounds: at most MAX_FINGERPRINTS per image (the oldest goes first: its account pulls once more);
 * records of images the engine no longer has are dropped at agent start and, at most every
 * PRUNE_INTERVAL_MS, after a pull with credentials. A record is never dropped for space while its
 * image is still cached: that would make a private image look public.
 *
 * A pull with credentials is marked in the state file while it runs (`pending_pulls`): an agent
 * stopped during one may find the image cached without a record; at the next start, a marked
 * reference the engine has is recorded as private with no fingerprint (everyone pulls it once
 * more). While any such pull is unsettled, a cached image without a record counts as public only
 * if this process saw it so before (it was there, public, before that pull could have put it there).
 */
import { createHash } from "node:crypto";
import type { RegistryAuth } from "../core/schemas";
import type { Clock } from "./clock";
import type { ContainerEngine } from "./docker/engine";
import { errorText, type Logger } from "./logger";
import type { AgentState } from "./state";

/** The fingerprint of a placement without credentials; never in a record. */
export const ANONYMOUS = "anonymous";
export const MAX_FINGERPRINTS = 32;
export const PRUNE_INTERVAL_MS = 60 * 60_000;
/** Image ids remembered as seen public in this process (forgotten all at once beyond this). */
const MAX_SEEN_PUBLIC = 10_000;

/** sha256 over the salt, registry, user name and password (each length-prefixed); ANONYMOUS without credentials. */
export function credentialsFingerprint(auth: RegistryAuth, salt: string): string {
  if (!auth.credentials) return ANONYMOUS;
  const hash = createHash("sha256");
  for (const part of [salt, auth.registry, auth.credentials.username, auth.credentials.password]) {
    hash.update(`${Buffer.byteLength(part, "utf8")}:`);
    hash.update(part, "utf8");
  }
  return `sha256:${hash.digest("hex")}`;
}

/** One pull, from start to outcome. */
export interface PullTicket {
  /** The pull succeeded and the reference now names `imageId` (null: the engine could not say). */
  succeeded(imageId: string | null): void;
  failed(): void;
}

export class PrivateImages {
  /** Pulls with credentials running in this process, by reference. */
  private readonly inFlight = new Map<string, number>();
  /** References a previous process was pulling with credentials when it stopped, not resolved yet. */
  private readonly leftovers: Set<string>;
  /** Image ids seen without a record while nothing was unsettled, or pulled anonymously, in this process. */
  private readonly seenPublic = new Set<string>();
  /** When (`Clock.monotonic`) the records were last pruned: a wall clock stepped back must not delay the next. */
  private lastPrune = Number.NEGATIVE_INFINITY;
  private settling: Promise<void> | null = null;

  constructor(
    private readonly state: AgentState,
    private readonly engine: Pick<ContainerEngine, "imageId">,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    this.leftovers = new Set(Object.keys(state.pendingPulls()));
  }

  fingerprint(auth: RegistryAuth): string {
    return auth.credentials ? credentialsFingerprint(auth, this.state.fingerprintSalt()) : ANONYMOUS;
  }

  /** Some pull with credentials has an outcome not recorded yet: an image without a record may be private. */
  get unsettled(): boolean {
    return this.inFlight.size > 0 || this.leftovers.size > 0;
  }

  /**
   * The hot path's question, answered from memory: no record, and either nothing unsettled or the
   * image was seen public before (a pull still unsettled cannot have put it here).
   */
  isPublic(imageId: string): boolean {
    if (this.state.imageRecord(imageId)) return false;
    if (this.seenPublic.has(imageId)) return true;
    if (this.unsettled) return false;
    this.notePublic(imageId);
    return true;
  }

  /** May a placement with credentials of this fingerprint start from this cached image without a pull? */
  mayStart(imageId: string, fingerprint: string): boolean {
    const record = this.state.imageRecord(imageId);
    if (record) return fingerprint !== ANONYMOUS && record.fingerprints.includes(fingerprint);
    return this.isPublic(imageId);
  }

  /** Marks a pull with credentials (in memory and on disk) until its outcome is recorded. */
  startPull(ref: string, fingerprint: string): PullTicket {
    const credentialed = fingerprint !== ANONYMOUS;
    if (credentialed) {
      this.inFlight.set(ref, (this.inFlight.get(ref) ?? 0) + 1);
      if (!(ref in this.state.pendingPulls())) this.state.setPendingPull(ref, this.clock.now());
    }
    let over = false;
    const end = (keepMarker: boolean) => {
      over = true;
      if (!credentialed) return;
      const left = (this.inFlight.get(ref) ?? 1) - 1;
      if (left > 0) this.inFlight.set(ref, left);
      else this.inFlight.delete(ref);
      if (keepMarker) this.leftovers.add(ref);
      else if (left === 0 && !this.leftovers.has(ref)) this.state.setPendingPull(ref, undefined);
    };
    return {
      succeeded: (imageId) => {
        if (over) return;
        if (imageId === null) {
          // Pulled, but not known as what: settled later, like a pull an earlier process left.
          end(credentialed);
          return;
        }
        if (credentialed) this.addFingerprint(imageId, ref, fingerprint);
        else {
          this.state.setImageRecord(imageId, undefined);
          this.notePublic(imageId);
        }
        end(false);
        if (credentialed) this.pruneNowAndThen();
      },
      failed: () => {
        if (!over) end(false);
      },
    };
  }

  /**
   * Resolves what an earlier process (or a pull whose image id was unknown) left unsettled: a marked
   * reference the engine has is recorded as private with no fingerprint. Safe to call often: a no-op
   * when nothing is left, and one at a time.
   */
  settle(): Promise<void> {
    if (this.leftovers.size === 0) return Promise.resolve();
    this.settling ??= this.resolveLeftovers().finally(() => {
      this.settling = null;
    });
    return this.settling;
  }

  /** At agent start: settle what the last process left, and forget images the engine no longer has. */
  async start(): Promise<void> {
    await this.settle();
    await this.prune();
  }

  /** Drops the records of images the engine no longer has (kept when the engine cannot say). */
  async prune(): Promise<void> {
    this.lastPrune = this.clock.monotonic();
    for (const id of this.state.imageRecordIds()) {
      const record = this.state.imageRecord(id);
      const present = await this.engine.imageId(id).then(
        (found) => found !== null,
        () => true,
      );
      // Unchanged meanwhile: a pull that recorded it since has the image back.
      if (!present && this.state.imageRecord(id) === record) this.state.setImageRecord(id, undefined);
    }
  }

  private pruneNowAndThen(): void {
    if (this.clock.monotonic() - this.lastPrune < PRUNE_INTERVAL_MS) return;
    void this.prune().catch((error) =>
      this.log("warn", "could not prune the private image records", { error: errorText(error) }),
    );
  }

  private notePublic(imageId: string): void {
    if (this.seenPublic.size >= MAX_SEEN_PUBLIC) this.seenPublic.clear();
    this.seenPublic.add(imageId);
  }

  private addFingerprint(imageId: string, ref: string, fingerprint: string): void {
    const before = this.state.imageRecord(imageId)?.fingerprints ?? [];
    const fingerprints = [...before.filter((f) => f !== fingerprint), fingerprint].slice(-MAX_FINGERPRINTS);
    this.seenPublic.delete(imageId);
    this.state.setImageRecord(imageId, { ref, fingerprints, at: this.clock.now() });
  }

  private async resolveLeftovers(): Promise<void> {
    for (const ref of [...this.leftovers]) {
      if (this.inFlight.has(ref)) continue; // its own pull settles it
      let imageId: string | null;
      try {
        imageId = await this.engine.imageId(ref);
      } catch (error) {
        this.log("warn", "could not check an image pulled with credentials before; it stays unsettled", {
          image: ref,
          error: errorText(error),
        });
        continue;
      }
      if (imageId && !this.state.imageRecord(imageId)) {
        this.state.setImageRecord(imageId, { ref, fingerprints: [], at: this.clock.now() });
      }
      this.leftovers.delete(ref);
      if (!this.inFlight.has(ref)) this.state.setPendingPull(ref, undefined);
    }
  }
}
