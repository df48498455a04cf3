/** Token buckets: the arithmetic (with an explicit clock) and the Durable Object that applies it. */
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { type BucketSpec, type BucketState, take } from "./bucket";

const account: BucketSpec = { name: "account", limit: 10, windowS: 60 };
const key: BucketSpec = { name: "key:a", limit: 4, windowS: 60 };

function run(specs: BucketSpec[], times: number[]) {
  let states = new Map<string, BucketState>();
  return times.map((now) => {
    const { decision, next } = take(specs, states, now);
    states = next;
    return decision;
  });
}

describe("token buckets", () => {
  it("allows a burst of `limit`, then refuses with the wait until one token is back", () => {
    const decisions = run([key], [0, 0, 0, 0, 0]);
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, true, false]);
    expect(decisions.map((d) => d.tightest.remaining)).toEqual([3, 2, 1, 0, 0]);
    // 4 per 60 s: one token every 15 s.
    expect(decisions[4]).toMatchObject({ allowed: false, retryAfterS: 15 });
  });

  it("refills evenly over the window, never above the limit", () => {
    // Empty at t=0; 15 s later one token is back; 10 minutes later it is full (4), not 40.
    const d = run([key], [0, 0, 0, 0, 15_000, 15_000, 600_000]);
    expect(d.map((x) => x.allowed)).toEqual([true, true, true, true, true, false, true]);
    expect(d[6]!.tightest.remaining).toBe(3);
  });

  it("takes from every bucket or from none", () => {
    const decisions = run([account, key], [0, 0, 0, 0, 0]);
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, true, false]);
    expect(decisions[4]!.tightest.name).toBe("key:a");
    // The refused request did not consume the account's token: another key still gets 6.
    let states = new Map<string, BucketState>();
    for (let i = 0; i < 4; i++) states = take([account, key], states, 0).next;
    states = take([account, key], states, 0).next; // refused
    const other: BucketSpec = { name: "key:b", limit: 100, windowS: 60 };
    const allowed = [];
    for (let i = 0; i < 7; i++) {
      const r = take([account, other], states, 0);
      states = r.next;
      allowed.push(r.decision.allowed);
    }
    expect(allowed).toEqual([true, true, true, true, true, true, false]);
  });

  it("reports the bucket with the smallest share left", () => {
    const [first] = run([account, key], [0]);
    // account 9/10 left, key 3/4: the key is tighter.
    expect(first!.tightest).toMatchObject({ name: "key:a", limit: 4, remaining: 3, resetS: 15 });
  });
});

describe("RateLimiter", () => {
  it("keeps its buckets in SQLite, so a new instance continues where the last left off", async () => {
    const stub = env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(`account:${crypto.randomUUID()}`));
    const specs = [{ name: "account", limit: 3, windowS: 3600 }];
    expect((await stub.take(specs)).allowed).toBe(true);
    expect((await stub.take(specs)).allowed).toBe(true);
    await runInDurableObject(stub, async (_instance, state) => {
      const rows = state.storage.sql
        .exec<{ name: string; tokens: number }>("select name, tokens from buckets")
        .toArray();
      expect(rows).toHaveLength(1);
      expect(rows[0]!.name).toBe("account");
      expect(rows[0]!.tokens).toBeLessThan(1.01);
    });
    // Fresh instances over the same storage (as after an eviction) see the tokens already taken.
    const freshTake = () =>
      runInDurableObject(stub, async (_instance, state) => {
        const { RateLimiter } = await import("./RateLimiter");
        return new RateLimiter(state, {}).take(specs);
      });
    expect((await freshTake()).allowed).toBe(true);
    expect((await freshTake()).allowed).toBe(false);
  });
});
