/**
 * The Idempotency-Key claim itself, on a route held open by the test: a live request renews its
 * claim, and a request whose claim was taken over (it looked dead) neither stores its answer over
 * the new holder's nor releases its key. Against the embedded Postgres, in workerd.
 */
import { env } from "cloudflare:test";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { signUp, sql, type TestUser } from "../api/test-support";
import type { Caller } from "../auth/caller";
import type { ApiEnv } from "./api-env";
import { RequestDb } from "./database";
import { ApiError, errorResponse } from "./errors";
import { idempotencyWith } from "./idempotency";
import { createLogger } from "./log";

function callerOf(user: TestUser): Caller {
  return {
    kind: "user",
    userId: user.userId,
    email: user.email,
    apiKey: null,
    account: {
      id: user.accountId,
      name: "test",
      fastTierEnabled: false,
      maxConcurrentGpus: 8,
      monthlySpendCapCents: null,
      isOperator: false,
      rateLimitOverride: null,
    },
    role: "owner",
    scopes: [],
    memberships: [],
  };
}

/** An app whose POST /make waits for the test to let each request through, in arrival order. */
function heldApp(user: TestUser, claimSeconds: number) {
  const waiting: Array<() => void> = [];
  let served = 0;
  const app = new Hono<ApiEnv>();
  app.onError((error, c) => (error instanceof ApiError ? errorResponse(c, error) : c.text(String(error), 500)));
  app.use(async (c, next) => {
    c.set("log", createLogger("error"));
    c.set("caller", callerOf(user));
    const pg = new RequestDb(c.env);
    c.set("pg", pg);
    try {
      await next();
    } finally {
      await pg.close();
    }
  });
  app.use(idempotencyWith({ claimSeconds }));
  app.post("/make", async (c) => {
    await new Promise<void>((resolve) => waiting.push(resolve));
    served += 1;
    return c.json({ made: c.get("idempotentId"), answer: served }, 201);
  });
  const post = (key: string) =>
    app.request("/make", { method: "POST", headers: { "idempotency-key": key }, body: "{}" }, env);
  /** Let the oldest held request finish, once it has reached the route. */
  const letOneThrough = async () => {
    while (waiting.length === 0) await new Promise((r) => setTimeout(r, 10));
    waiting.shift()!();
  };
  const reached = async (n: number) => {
    while (waiting.length < n) await new Promise((r) => setTimeout(r, 10));
  };
  return { post, letOneThrough, reached };
}

const keyRow = (accountId: string, key: string) =>
  sql<{ state: string; claim_id: string; resource_id: string; response_body: { answer: number } | null }>(
    "select state, claim_id, resource_id, response_body from idempotency_keys where account_id = $1 and key = $2",
    [accountId, key],
  ).then((rows) => rows[0]);

describe("Idempotency-Key claims", () => {
  it("renews the claim of a request still running, so a retry after the claim's length is told to wait", async () => {
    const user = await signUp();
    const app = heldApp(user, 3);
    const first = app.post("slow");
    await app.reached(1);
    // Longer than the claim: without renewals the retry would take the key over and run again.
    await new Promise((r) => setTimeout(r, 4_500));
    // A retry that took the key over would reach the route (a second one held there) instead.
    const retry = await Promise.race([app.post("slow"), app.reached(2).then(() => null)]);
    expect(retry?.status).toBe(409);
    expect(((await retry!.json()) as { error: { code: string } }).error.code).toBe("idempotency_key_in_progress");
    await app.letOneThrough();
    const answer = (await (await first).json()) as { made: string; answer: number };
    const replay = await app.post("slow");
    expect(replay.status).toBe(201);
    expect(replay.headers.get("idempotency-replayed")).toBe("true");
    expect(await replay.json()).toEqual(answer);
  }, 15_000);

  it("lets a request whose claim was taken over neither store its answer nor release the key", async () => {
    const user = await signUp();
    const app = heldApp(user, 60);
    const first = app.post("taken");
    await app.reached(1);
    const before = await keyRow(user.accountId, "taken");
    // The first request looks dead (its claim ran out unrenewed): a retry takes the key over.
    await sql("update idempotency_keys set locked_until = now() - interval '1 second' where account_id = $1", [
      user.accountId,
    ]);
    const second = app.post("taken");
    await app.reached(2);
    const during = await keyRow(user.accountId, "taken");
    expect(during!.claim_id).not.toBe(before!.claim_id);
    // Whatever the first was making keeps its id: the retry makes the same thing, not a second.
    expect(during!.resource_id).toBe(before!.resource_id);

    await app.letOneThrough();
    expect((await first).status).toBe(201);
    const after = await keyRow(user.accountId, "taken");
    expect(after).toMatchObject({ state: "in_progress", claim_id: during!.claim_id, response_body: null });

    await app.letOneThrough();
    const kept = (await (await second).json()) as { made: string; answer: number };
    expect(kept).toEqual({ made: before!.resource_id, answer: 2 });
    const replay = await app.post("taken");
    expect(replay.headers.get("idempotency-replayed")).toBe("true");
    expect(await replay.json()).toEqual(kept);
  });
});
