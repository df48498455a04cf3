/**
 * The local pool (the Hyperdrive stand-in's pooling) against the real embedded Postgres: clients one
 * after another share a warm backend with nothing of the previous session left; a client that leaves
 * mid-transaction or mid-query costs its backend; concurrent clients get backends of their own.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startEmbeddedPostgres } from "../db/embedded";
import { createTestDatabase, sqlState, type TestDatabase } from "../test/database";
import { type PgPool, startPgPool } from "./pool";

let db: TestDatabase;
let pool: PgPool;
/** Like the Worker's client (workers/db/client.ts): one connection, prepared statements, no type fetch. */
const client = (url = pool.url, extra: postgres.Options<Record<string, never>> = {}) =>
  postgres(url, { max: 1, fetch_types: false, prepare: true, onnotice: () => {}, ...extra });

async function session<T>(fn: (sql: postgres.Sql) => Promise<T>, extra = {}): Promise<T> {
  const sql = client(pool.url, extra);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 2 });
  }
}
const pid = (sql: postgres.Sql) => sql<{ pid: number }[]>`select pg_backend_pid() as pid`.then((r) => r[0]!.pid);
/** The pool puts a connection back after its reset, a moment after the client has gone. */
const settle = () => new Promise((r) => setTimeout(r, 50));

beforeAll(async () => {
  db = await createTestDatabase();
  await db.sql`create table pool_test (id int primary key)`;
  pool = await startPgPool({ target: db.url });
});
afterAll(async () => {
  await pool?.close();
  await db?.drop();
});

describe("the local Postgres pool", () => {
  it("gives clients one after another the same warm backend, with nothing of the last session left", async () => {
    const first = await session(async (sql) => {
      await sql`set application_name = 'first client'`;
      await sql`create temp table scratch (x int)`;
      await sql.unsafe("prepare by_hand as select 1");
      // A named statement of postgres.js's own (prepare: true): the next client will name its first one alike.
      await sql`select ${1}::int as n`;
      return pid(sql);
    });
    await settle();
    const second = await session(async (sql) => {
      const [state] = await sql<{ app: string; scratch: string | null; statements: number }[]>`
        select current_setting('application_name') as app, to_regclass('pg_temp.scratch')::text as scratch,
               (select count(*)::int from pg_prepared_statements where name = 'by_hand') as statements`;
      expect(await sql`select ${2}::int as n`).toEqual([{ n: 2 }]);
      return { pid: await pid(sql), state };
    });
    expect(second.pid).toBe(first);
    // application_name back to what the startup asked for (postgres.js sends its own name).
    expect(second.state).toEqual({ app: "postgres.js", scratch: null, statements: 0 });
    expect(pool.stats().reused).toBeGreaterThanOrEqual(1);
  });

  it("keeps a backend whose client's query failed, once the error was answered", async () => {
    const first = await session(async (sql) => {
      expect(await sqlState(sql`select 1 / 0`)).toBe("22012");
      return pid(sql);
    });
    await settle();
    expect(await session(pid)).toBe(first);
  });

  it("closes the backend of a client that left inside a transaction; its work is rolled back", async () => {
    const socketPid = await new Promise<number>((resolve, reject) => {
      const sql = client();
      sql
        .begin(async (tx) => {
          await tx`insert into pool_test (id) values (1)`;
          const p = await pid(tx as unknown as postgres.Sql);
          resolve(p);
          await new Promise(() => {}); // never commits
        })
        .catch(reject);
      // The client vanishes without a word (a crashed request).
      setTimeout(() => void sql.end({ timeout: 0 }), 200);
    });
    await new Promise((r) => setTimeout(r, 300));
    const after = await session(async (sql) => ({
      pid: await pid(sql),
      rows: await sql`select id from pool_test`,
    }));
    expect(after.pid).not.toBe(socketPid);
    expect(after.rows).toEqual([]);
  });

  it("gives concurrent clients backends of their own, and keeps them for later", async () => {
    await settle();
    const pids = await Promise.all(
      Array.from({ length: 5 }, () =>
        session(async (sql) => {
          await sql`select pg_sleep(0.1)`;
          return pid(sql);
        }),
      ),
    );
    expect(new Set(pids).size).toBe(5);
    await settle();
    expect(pool.stats().idle).toBeGreaterThanOrEqual(5);
    const again = await session(pid);
    expect(pids).toContain(again);
  });

  it("passes the database's refusal through (an unknown database)", async () => {
    const url = new URL(pool.url);
    url.pathname = "/no_such_database";
    const sql = client(url.toString());
    try {
      expect(await sqlState(sql`select 1`)).toBe("3D000");
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  it("answers a TLS request with N, and the client goes on in the clear", async () => {
    expect(await session(async (sql) => (await sql`select 1 as one`)[0], { ssl: "prefer" })).toEqual({ one: 1 });
  });

  it("drops garbage without harm", async () => {
    await new Promise<void>((resolve) => {
      const socket = connect(pool.port, "127.0.0.1", () => socket.write(Buffer.from([0, 0, 0, 2, 1, 2, 3])));
      socket.on("close", () => resolve());
      socket.on("error", () => resolve());
    });
    expect(await session(async (sql) => (await sql`select 2 as two`)[0])).toEqual({ two: 2 });
  });

  it("pools nothing of a database that asks for a password: each client authenticates over its own pipe", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scalar-pool-scram-"));
    const saved = process.env.SCALAR_PG_AUTH;
    process.env.SCALAR_PG_AUTH = "scram-sha-256";
    try {
      const scram = await startEmbeddedPostgres({ dataDir: join(dir, "pg"), port: await freePort(), ephemeral: true });
      const guarded = await startPgPool({ target: scram.url });
      try {
        const wrong = client(guarded.url.replace(":postgres@", ":wrong@"));
        try {
          expect(await sqlState(wrong`select 1`)).toBe("28P01");
        } finally {
          await wrong.end({ timeout: 1 });
        }
        const right = client(guarded.url);
        try {
          expect(await right`select 3 as three`).toEqual([{ three: 3 }]);
        } finally {
          await right.end({ timeout: 1 });
        }
        expect(guarded.stats()).toMatchObject({ opened: 0, reused: 0, idle: 0 });
      } finally {
        await guarded.close();
        await scram.stop();
      }
    } finally {
      if (saved === undefined) delete process.env.SCALAR_PG_AUTH;
      else process.env.SCALAR_PG_AUTH = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("fails a client at once when the database hangs up during the startup", async () => {
    const rude = createServer((socket) => socket.destroy());
    await new Promise<void>((r) => rude.listen(0, "127.0.0.1", () => r()));
    const port = (rude.address() as { port: number }).port;
    const front = await startPgPool({ target: `postgres://postgres:postgres@127.0.0.1:${port}/scalar` });
    const sql = client(front.url, { connect_timeout: 5 });
    try {
      const started = Date.now();
      await expect(sql`select 1`).rejects.toThrow(/closed the connection during its startup/);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      await sql.end({ timeout: 1 });
      await front.close();
      rude.close();
    }
  });
});
