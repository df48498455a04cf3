/**
 * What the agent remembers across restarts, in `<data>/state.json`: its node identity, the last
 * desired set (so deadlines are kept even while the control plane is unreachable), and per
 * placement whether its outcome is already reported (never start it again), why we stopped it,
 * and how far its log has been acknowledged.
 */
import { join } from "node:path";
import { z } from "zod";
import { PlacementSet } from "../core/schemas";
import { readJson, writeJsonAtomic } from "./files";

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

const StateFile = z.object({
  version: z.literal(1),
  node_id: z.string().optional(),
  region: z.string().optional(),
  placement_set: PlacementSet.optional(),
  placements: z.record(z.string(), PlacementRecord),
});
type StateFile = z.infer<typeof StateFile>;

export class AgentState {
  private constructor(
    private readonly file: string,
    private data: StateFile,
  ) {}

  static open(dataDir: string): AgentState {
    const file = join(dataDir, "state.json");
    const raw = readJson(file);
    const data = raw === undefined ? { version: 1 as const, placements: {} } : StateFile.parse(raw);
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

  private save(): void {
    writeJsonAtomic(this.file, this.data);
  }
}
