/**
 * What the agent remembers across restarts, in `<data>/state.json`: its node identity, the last
 * desired set (so deadlines are kept even while the control plane is unreachable), per
 * placement whether its outcome is already reported (never start it again), why we stopped it,
 * and how far its log has been acknowledged; which cached images were pulled with registry
 * credentials, and with which (fingerprints only: see private-images.ts); and when each image was
 * last pulled or started from (image-gc.ts: least recently used goes first). A write that fails is
 * logged and the state goes on in memory (files.ts, DataFile): the next change writes it again.
 *
 * A state file that cannot be read at start is set aside and the agent starts from an empty state
 * (files.ts). The records of images pulled with credentials went with it, and a private image must
 * never look public: from then on every cached image without a record reads as private with no
 * fingerprint (every account pulls it once more) until an anonymous pull shows it public
 * (`images_unknown`).
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { z } from "zod";
import { PlacementSet } from "../core/schemas";
import { DataFile } from "./files";
import { type Logger, silentLogger } from "./logger";

/** Position after the last acknowledged log entry: its seq, timestamp, and how many entries share it. */
export const LogCursor = z.object({ seq: z.number().int(), ts: z.string(), same_ts: z.number().int().positive() });
export type LogCursor = z.infer<typeof LogCursor>;

const PlacementRecord = z.object({
  /** Set once the outcome event is in the outbox. */
  finished: z.enum(["exited", "failed"]).optional(),
  stop_reason: z.enum(["cancel", "deadline"]).optional(),
  log: LogCursor.optional(),
});
export type PlacementRecord = z.infer<typeof PlacementRecord>;

/** An image in the engine that was pulled with registry credentials, by its engine id. */
export const ImageRecord = z.object({
  /** The reference it was last pulled as (for operators; the record is the image's, whatever it is called). */
  ref: z.string(),
  /** Fingerprints of the credentials it was pulled with, oldest first (never the credentials). */
  fingerprints: z.array(z.string()),
  /** When it was last pulled with credentials (ms). */
  at: z.number(),
});
export type ImageRecord = z.infer<typeof ImageRecord>;

const StateFile = z.object({
  version: z.literal(1),
  node_id: z.string().optional(),
  region: z.string().optional(),
  placement_set: PlacementSet.optional(),
  placements: z.record(z.string(), PlacementRecord),
  /** Images pulled with credentials, by engine image id. */
  images: z.record(z.string(), ImageRecord).optional(),
  /** Pulls with credentials started and not yet recorded, by reference → start time (ms). */
  pending_pulls: z.record(z.string(), z.number()).optional(),
  /** When this agent last pulled or started a placement from each image (ms), by engine image id (bounded: image-gc.ts). */
  image_use: z.record(z.string(), z.number()).optional(),
  /** Mixed into credential fingerprints, so they cannot be compared with other nodes' or looked up. */
  fingerprint_salt: z.string().optional(),
  /**
   * Set when a state file that could not be read was set aside (ms): the image records were lost, so
   * an image without one counts as pulled with credentials then, unless listed `public` since (an
   * anonymous pull of it succeeded; bounded, oldest dropped first).
   */
  images_unknown: z.object({ since: z.number(), public: z.array(z.string()) }).optional(),
});
type StateFile = z.infer<typeof StateFile>;

/** Image ids kept as shown public after the image records were lost (beyond: pulled once more). */
const MAX_PUBLIC_AFTER_LOSS = 1_000;

export class AgentState {
  private constructor(
    private readonly file: DataFile,
    private data: StateFile,
  ) {}

  /** Reads `<dataDir>/state.json`; one that cannot be read is set aside and the state starts empty. */
  static open(dataDir: string, log: Logger = silentLogger): AgentState {
    const file = new DataFile(join(dataDir, "state.json"), log);
    const data: StateFile = file.read((raw) => StateFile.parse(raw)) ?? { version: 1, placements: {} };
    if (file.setAside) {
      data.images_unknown = { since: Date.now(), public: [] };
      file.write(data);
    }
    return new AgentState(file, data);
  }

  get nodeId(): string | undefined {
    return this.data.node_id;
  }

  get placementSet(): PlacementSet | undefined {
    return this.data.placement_set;
  }

  setIdentity(nodeId: string, region: string): void {
    this.data.node_id = nodeId;
    this.data.region = region;
    this.save();
  }

  setPlacementSet(set: PlacementSet): void {
    this.data.placement_set = set;
    this.save();
  }

  placement(id: string): PlacementRecord {
    return this.data.placements[id] ?? {};
  }

  updatePlacement(id: string, change: Partial<PlacementRecord>): void {
    this.data.placements[id] = { ...this.placement(id), ...change };
    this.save();
  }

  forgetPlacement(id: string): void {
    if (!(id in this.data.placements)) return;
    delete this.data.placements[id];
    this.save();
  }

  knownPlacements(): string[] {
    return Object.keys(this.data.placements);
  }

  /**
   * The image's record; after the records were lost, an image not shown public since reads as
   * pulled with credentials, none known.
   */
  imageRecord(imageId: string): ImageRecord | undefined {
    const record = this.data.images?.[imageId];
    const unknown = this.data.images_unknown;
    if (record || !unknown || unknown.public.includes(imageId)) return record;
    return { ref: "", fingerprints: [], at: unknown.since };
  }

  imageRecordIds(): string[] {
    return Object.keys(this.data.images ?? {});
  }

  /**
   * Replaces (or with undefined, drops: the image is public) an image's record: always a new object,
   * never changed in place.
   */
  setImageRecord(imageId: string, record: ImageRecord | undefined): void {
    const images = { ...this.data.images };
    const unknown = this.data.images_unknown;
    const showsPublic = !record && unknown !== undefined && !unknown.public.includes(imageId);
    if (record) images[imageId] = record;
    else if (imageId in images) delete images[imageId];
    else if (!showsPublic) return;
    this.data.images = images;
    if (showsPublic) {
      this.data.images_unknown = { ...unknown, public: [...unknown.public, imageId].slice(-MAX_PUBLIC_AFTER_LOSS) };
    }
    this.save();
  }

  pendingPulls(): Record<string, number> {
    return { ...this.data.pending_pulls };
  }

  setPendingPull(ref: string, startedAt: number | undefined): void {
    const pending = { ...this.data.pending_pulls };
    if (startedAt !== undefined) pending[ref] = startedAt;
    else if (ref in pending) delete pending[ref];
    else return;
    this.data.pending_pulls = pending;
    this.save();
  }

  /** When each image was last pulled or started from, by engine image id (a copy). */
  imageUse(): Record<string, number> {
    return { ...this.data.image_use };
  }

  /** Sets (or with undefined, drops) images' last-use times in one write. */
  updateImageUse(changes: Record<string, number | undefined>): void {
    const use = { ...this.data.image_use };
    let changed = false;
    for (const [id, at] of Object.entries(changes)) {
      if (at !== undefined && use[id] !== at) {
        use[id] = at;
        changed = true;
      } else if (at === undefined && id in use) {
        delete use[id];
        changed = true;
      }
    }
    if (!changed) return;
    this.data.image_use = use;
    this.save();
  }

  /** This node's fingerprint salt, made (and saved) on first use. */
  fingerprintSalt(): string {
    if (!this.data.fingerprint_salt) {
      this.data.fingerprint_salt = randomBytes(16).toString("hex");
      this.save();
    }
    return this.data.fingerprint_salt;
  }

  private save(): void {
    this.file.write(this.data);
  }
}
