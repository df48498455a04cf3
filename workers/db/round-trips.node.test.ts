/**
 * The round-trip savers against a real (embedded) Postgres: literals read back exactly, and the
 * pipelined transaction commits, rolls back, and keeps the statements after its lock inside it; the
 * one-round-trip write commits, or rolls back when its statement fails, and maps rows as drizzle does.
 */
import { sql as dsql, eq, getTableColumns } from "drizzle-orm";
import { integer, jsonb, pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core";
import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type TestDatabase } from "../../tools/test/database";
import { inlineRow, literal, mapColumns, pipelinedTransaction, pipelinedWrite } from "./round-trips";

let db: TestDatabase;
/** Like the Worker's client (openDb): one connection, prepared statements, no type fetch. */
const client = () => postgres(db.url, { max: 1, fetch_types: false, prepare: true, onnotice: () => {} });

beforeAll(async () => {
  db = await createTestDatabase();
  await db.sql`create table rt_test (id int primary key, note text)`;
  await db.sql`create table rt_rows (id uuid primary key, n integer, note text, tags text[] not null,
                                     data jsonb not null, at timestamptz, missing text, made text default 'x')`;
});
afterAll(async () => {
  await db?.drop();
});

describe("literal", () => {
  const nasty = [
    "",
    "plain",
    "it's",
    "''; drop table rt_test; --",
    "back\\slash",
    "\\'; select 1; --",
    "E'x'",
    "$$dollar$$",
    "line\nbreak\ttab",
    "ünïcødé ✓ 🚀",
    "\\x41\\101\\u0041",
  ];

  it.each(["on", "off"])("reads back every string exactly with standard_conforming_strings %s", async (setting) => {
    const sql = client();
    try {
      await sql.unsafe(`set standard_conforming_strings = ${setting}`);
      for (const s of nasty) {
        const [row] = await sql.unsafe<{ v: string }[]>(`select ${literal(s)} as v`);
        expect(row?.v).toBe(s);
      }
    } finally {
      await sql.end();
    }
  });

  it("refuses NUL, which no Postgres string can hold", () => {
    expect(() => literal("a\0b")).toThrow(/NUL/);
  });
});

describe("pipelinedTransaction", () => {
  it("commits what fn wrote", async () => {
    const sql = client();
    try {
      const out = await pipelinedTransaction(sql, "select 1", async () => {
        await sql`insert into rt_test (id, note) values (${1}, ${"kept"})`;
        return "done";
      });
      expect(out).toBe("done");
    } finally {
      await sql.end();
    }
    expect(await db.sql`select note from rt_test where id = 1`).toEqual([{ note: "kept" }]);
  });

  it("rolls back and rethrows when fn throws after writing", async () => {
    const sql = client();
    try {
      await expect(
        pipelinedTransaction(sql, "select 1", async () => {
          await sql`insert into rt_test (id, note) values (${2}, ${"gone"})`;
          throw new Error("over quota");
        }),
      ).rejects.toThrow("over quota");
      // The connection is usable again, outside any transaction.
      expect(await sql`select count(*)::int as n from rt_test where id = 2`).toEqual([{ n: 0 }]);
    } finally {
      await sql.end();
    }
  });

  it("throws the first statement's own error, not the aborted transaction's", async () => {
    const sql = client();
    try {
      const state = await sqlState(
        pipelinedTransaction(sql, "select 1 from no_such_table", async () => {
          await sql`insert into rt_test (id, note) values (${3}, ${"never"})`;
        }),
      );
      expect(state).toBe("42P01");
    } finally {
      await sql.end();
    }
    expect(await db.sql`select count(*)::int as n from rt_test where id = 3`).toEqual([{ n: 0 }]);
  });

  it("holds the first statement's row lock until the commit", async () => {
    await db.sql`insert into rt_test (id, note) values (10, 'locked row')`;
    const sql = client();
    const other = client();
    try {
      let release!: () => void;
      const held = new Promise<void>((r) => {
        release = r;
      });
      const tx = pipelinedTransaction(sql, "select 1 from rt_test where id = 10 for update", async () => {
        await held;
      });
      // Once the lock is taken, another transaction cannot take it without waiting.
      await expect
        .poll(
          async () =>
            (
              await other`
            select count(*)::int as n from pg_locks
             where relation = 'rt_test'::regclass and mode = 'RowShareLock'
               and database = (select oid from pg_database where datname = current_database())`
            )[0]?.n,
        )
        .toBeGreaterThan(0);
      const state = await sqlState(
        other.begin(async (o) => {
          await o.unsafe("set local lock_timeout = '200ms'");
          await o.unsafe("select 1 from rt_test where id = 10 for update");
        }),
      );
      expect(state).toBe("55P03");
      release();
      await tx;
      await other.begin(async (o) => {
        await o.unsafe("set local lock_timeout = '2s'");
        await o.unsafe("select 1 from rt_test where id = 10 for update");
      });
    } finally {
      await sql.end();
      await other.end();
    }
  });
});

describe("pipelinedWrite", () => {
  it("commits the statement and returns its rows as arrays", async () => {
    const sql = client();
    try {
      const rows = await pipelinedWrite(
        sql,
        "select 1",
        "insert into rt_test (id, note) values (20, 'one trip') returning id, note",
      );
      expect(rows).toEqual([[20, "one trip"]]);
      // Committed: another connection sees it, and this one is outside any transaction.
      expect(await db.sql`select note from rt_test where id = 20`).toEqual([{ note: "one trip" }]);
      expect(await sql`select txid_current_if_assigned() as t`).toEqual([{ t: null }]);
    } finally {
      await sql.end();
    }
  });

  it("rolls everything back and throws the statement's error when the statement fails", async () => {
    const sql = client();
    try {
      // The first row is written, then the statement fails: nothing of it may stay.
      const state = await sqlState(
        pipelinedWrite(
          sql,
          "select 1",
          "with w as (insert into rt_test (id, note) values (21, 'gone')) select 1 / (select count(*) from rt_test where id = -1)::int",
        ),
      );
      expect(state).toBe("22012");
      expect(await db.sql`select count(*)::int as n from rt_test where id = 21`).toEqual([{ n: 0 }]);
      // The connection is usable again, outside any transaction.
      expect(await sql`select 1 as one`).toEqual([{ one: 1 }]);
    } finally {
      await sql.end();
    }
  });

  it("throws the lock's own error and writes nothing", async () => {
    const sql = client();
    try {
      expect(
        await sqlState(pipelinedWrite(sql, "select 1 from no_such_table", "insert into rt_test (id) values (22)")),
      ).toBe("42P01");
      expect(await db.sql`select count(*)::int as n from rt_test where id = 22`).toEqual([{ n: 0 }]);
    } finally {
      await sql.end();
    }
  });

  it("serialises writers on the lock: the second statement sees the first one's committed row", async () => {
    await db.sql`insert into rt_test (id, note) values (30, 'counter')`;
    const lock = "select 1 from rt_test where id = 30 for no key update";
    const next =
      "insert into rt_test (id, note) select coalesce(max(id), 30) + 1, 'next' from rt_test where id between 30 and 39 returning id";
    const clients = Array.from({ length: 5 }, client);
    try {
      const ids = await Promise.all(clients.map((c) => pipelinedWrite(c, lock, next)));
      // Without the lock (or with the statement's snapshot taken before it) two would pick the same id.
      expect(ids.map(([r]) => r?.[0]).sort()).toEqual([31, 32, 33, 34, 35]);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });
});

describe("inlineRow", () => {
  const rows = pgTable("rt_rows", {
    id: uuid("id").primaryKey(),
    n: integer("n"),
    note: text("note"),
    tags: text("tags").array().notNull(),
    data: jsonb("data").notNull(),
    at: timestamp("at", { withTimezone: true, mode: "date" }),
    missing: text("missing"),
    made: text("made"),
  });

  it("writes every value as a literal (no parameters) and the database stores what drizzle would have bound", async () => {
    const sql = client();
    const d = drizzle(sql);
    try {
      const row = {
        id: crypto.randomUUID(),
        n: -42,
        note: 'it\'s \\ a "note" ✓',
        tags: ["a,b", 'q"uote', "back\\slash", "it's", ""],
        data: { k: "v'\\", nested: [1, null, { x: "y" }], s: "$1" },
        at: new Date("2026-11-26T06:00:00.123Z"),
        missing: null,
        made: dsql`upper('made')`,
      };
      const statement = d.insert(rows).values(inlineRow(rows, row));
      expect(statement.toSQL().params).toEqual([]);
      await statement;
      const bound = crypto.randomUUID();
      await d.insert(rows).values({ ...row, id: bound, made: "MADE" });
      // Compared as the database's own text: what is stored, not how a driver reads it back.
      const stored = (id: string) =>
        db.sql`select n, note, tags::text, data::text, at, missing, made from rt_rows where id = ${id}`;
      const [inlined] = await stored(row.id);
      expect(inlined).toEqual((await stored(bound))[0]);
      expect(inlined).toMatchObject({ n: -42, note: row.note, at: row.at, missing: null, made: "MADE" });
      const [parsed] = await db.sql<
        { tags: string[]; data: unknown }[]
      >`select tags, data from rt_rows where id = ${row.id}`;
      expect(parsed).toEqual({ tags: row.tags, data: row.data });
    } finally {
      await sql.end();
    }
  });

  it("mapColumns reads a values() row back as drizzle's returning does", async () => {
    const sql = client();
    const d = drizzle(sql);
    try {
      const row = {
        id: crypto.randomUUID(),
        n: 7,
        note: "mapped",
        tags: ["x", "y,z"],
        data: { a: [1, "b"] },
        at: new Date("2026-11-26T08:00:00.5Z"),
        missing: null,
        made: "m",
      };
      const statement = d.insert(rows).values(inlineRow(rows, row)).returning(getTableColumns(rows)).toSQL();
      const mapped = mapColumns(getTableColumns(rows), await sql.unsafe(statement.sql).values());
      const viaDrizzle = await d.select().from(rows).where(eq(rows.id, row.id));
      expect(mapped).toEqual(viaDrizzle);
      expect(mapped).toEqual([row]);
    } finally {
      await sql.end();
    }
  });

  it("refuses what it cannot write", () => {
    expect(() => inlineRow(rows, { id: "x", tags: [], data: {}, n: Number.NaN })).toThrow(/finite/);
    expect(() => inlineRow(rows, { id: "x", tags: [], data: {}, note: "a\0b" })).toThrow(/NUL/);
  });
});
