/**
 * One Postgres client per request, opened on first use and closed once the response has gone.
 * Streaming responses outlive it and open their own (`withDb`).
 */
import { createMiddleware } from "hono/factory";
import { type Db, openDb, type Sql } from "../db/client";

export class RequestDb {
  private opened: ReturnType<typeof openDb> | null = null;
  constructor(private readonly env: Env) {}

  private open() {
    this.opened ??= openDb(this.env);
    return this.opened;
  }
  get db(): Db {
    return this.open().db;
  }
  get sql(): Sql {
    return this.open().sql;
  }
  close(): Promise<void> {
    const opened = this.opened;
    this.opened = null;
    return opened ? opened.close().catch(() => {}) : Promise.resolve();
  }
}

export const database = createMiddleware<{ Bindings: Env; Variables: { pg: RequestDb } }>(async (c, next) => {
  const pg = new RequestDb(c.env);
  c.set("pg", pg);
  try {
    await next();
  } finally {
    // Closing (postgres.js's Terminate, then the socket's end) need not hold the response: it runs
    // after the response has gone, within the request's waitUntil.
    const closing = pg.close();
    let ctx: { waitUntil(p: Promise<unknown>): void } | null = null;
    try {
      ctx = c.executionCtx;
    } catch {
      // No execution context (a direct app.request in a test): close before answering.
    }
    if (ctx) ctx.waitUntil(closing);
    else await closing;
  }
});
