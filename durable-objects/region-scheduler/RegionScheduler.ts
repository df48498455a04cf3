/**
 * One per region: the region's nodes, GPU allocations and job queue, changed one at a time so a GPU
 * is never handed out twice. See README.md beside this file for its tables.
 */
import { DurableObject } from "cloudflare:workers";
import { ObjectSql } from "../sqlite";
import { SCHEMA } from "./schema";

export interface RegionSchedulerEnv {
  HYPERDRIVE: Hyperdrive;
}

export class RegionScheduler extends DurableObject<RegionSchedulerEnv> {
  private readonly db: ObjectSql;
  readonly schemaVersion: number;

  constructor(ctx: DurableObjectState, env: RegionSchedulerEnv) {
    super(ctx, env);
    this.db = new ObjectSql(ctx.storage);
    this.schemaVersion = this.db.ensureSchema(SCHEMA);
  }

  /** Liveness of the object and its storage: the region it serves and its schema version. */
  async ping(region: string): Promise<{ region: string; schema_version: number; nodes: number }> {
    this.db.run("insert into meta (key, value) values ('region', ?) on conflict (key) do nothing", region);
    const nodes = this.db.one<{ n: number }>("select count(*) as n from nodes")?.n ?? 0;
    return {
      region: this.db.one<{ value: string }>("select value from meta where key = 'region'")?.value ?? region,
      schema_version: this.schemaVersion,
      nodes,
    };
  }
}
