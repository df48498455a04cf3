/**
 * One per account (`idFromName("account:<id>")`): the account's token bucket and one per API key or
 * user session, decided together so a request is counted in both or in neither. Single-threaded, so
 * check-and-take is atomic; buckets are written through to SQLite so an eviction does not reset them.
 */
import { DurableObject } from "cloudflare:workers";
import { ObjectSql } from "../sqlite";
import { type BucketSpec, type BucketState, type RateDecision, take } from "./bucket";
import { SCHEMA } from "./schema";

/** Rows idle longer than their window are full buckets, the same as no row: dropped now and then. */
const SWEEP_EVERY = 500;

export class RateLimiter extends DurableObject<Record<string, never>> {
  private readonly db: ObjectSql;
  private readonly cache = new Map<string, BucketState>();
  private calls = 0;

  constructor(ctx: DurableObjectState, env: Record<string, never>) {
    super(ctx, env);
    this.db = new ObjectSql(ctx.storage);
    this.db.ensureSchema(SCHEMA);
  }

  async take(specs: BucketSpec[], cost = 1): Promise<RateDecision> {
    const now = Date.now();
    const states = new Map<string, BucketState>();
    for (const spec of specs) {
      const state = this.cache.get(spec.name) ?? this.load(spec.name);
      if (state) states.set(spec.name, state);
    }
    const { decision, next } = take(specs, states, now, cost);
    for (const spec of specs) {
      const state = next.get(spec.name)!;
      this.db.run(
        `insert into buckets (name, tokens, updated_ms, window_s) values (?, ?, ?, ?)
         on conflict (name) do update set tokens = excluded.tokens, updated_ms = excluded.updated_ms,
           window_s = excluded.window_s`,
        spec.name,
        state.tokens,
        state.updatedMs,
        spec.windowS,
      );
      this.cache.set(spec.name, state);
    }
    this.calls += 1;
    if (this.calls % SWEEP_EVERY === 0) this.sweep(now);
    return decision;
  }

  private load(name: string): BucketState | undefined {
    const row = this.db.one<{ tokens: number; updated_ms: number }>(
      "select tokens, updated_ms from buckets where name = ?",
      name,
    );
    return row ? { tokens: row.tokens, updatedMs: row.updated_ms } : undefined;
  }

  private sweep(now: number): void {
    this.db.run("delete from buckets where updated_ms + window_s * 1000 < ?", now);
    this.cache.clear();
  }
}
