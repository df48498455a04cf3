/** The embedded Postgres's authentication choice, and that a new folder honours it. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { processAlive } from "../launcher/processes";
import { ephemeralPortRange, freePort, isPortFree, pgAuthMethod, startEmbeddedPostgres } from "./embedded";

const saved = process.env.SCALAR_PG_AUTH;
afterEach(() => {
  if (saved === undefined) delete process.env.SCALAR_PG_AUTH;
  else process.env.SCALAR_PG_AUTH = saved;
});

describe("freePort", () => {
  it("gives free ports from below the kernel's ephemeral range, which listen(0) and outgoing connections take", async () => {
    const [low] = ephemeralPortRange();
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(16384);
      expect(port).toBeLessThan(low);
      expect(await isPortFree(port)).toBe(true);
    }
    expect(new Set(ports).size).toBeGreaterThan(1); // chosen at random, not one port for everyone
  });
});

describe("pgAuthMethod", () => {
  it("is trust unless SCALAR_PG_AUTH asks for a password method, and refuses anything else", () => {
    delete process.env.SCALAR_PG_AUTH;
    expect(pgAuthMethod()).toBe("trust");
    process.env.SCALAR_PG_AUTH = "scram-sha-256";
    expect(pgAuthMethod()).toBe("scram-sha-256");
    process.env.SCALAR_PG_AUTH = "peer";
    expect(() => pgAuthMethod()).toThrow(/SCALAR_PG_AUTH=peer: expected trust, scram-sha-256, md5 or password/);
  });

  it("a new data folder asked for SCRAM refuses a wrong password; the default one does not ask", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scalar-pg-auth-"));
    try {
      for (const method of ["scram-sha-256", "trust"] as const) {
        process.env.SCALAR_PG_AUTH = method;
        const db = await startEmbeddedPostgres({ dataDir: join(dir, method), port: await freePort(), ephemeral: true });
        try {
          expect(readFileSync(join(dir, method, "pg_hba.conf"), "utf8")).toMatch(
            new RegExp(`127\\.0\\.0\\.1/32\\s+${method}`),
          );
          const wrong = postgres(db.url.replace(":postgres@", ":wrong@"), { max: 1, onnotice: () => {} });
          try {
            const attempt = wrong`select 1 as one`;
            if (method === "trust") await expect(attempt).resolves.toEqual([{ one: 1 }]);
            else await expect(attempt).rejects.toMatchObject({ code: "28P01" });
          } finally {
            await wrong.end();
          }
        } finally {
          await db.stop();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("stop", () => {
  it("returns when the server has already exited (a Ctrl-C reaches it too)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scalar-pg-stop-"));
    try {
      const db = await startEmbeddedPostgres({ dataDir: join(dir, "data"), port: await freePort(), ephemeral: true });
      const pid = Number(readFileSync(join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0]);
      process.kill(pid, "SIGINT");
      await expect.poll(() => processAlive(pid), { timeout: 20_000, interval: 100 }).toBe(false);
      // Without the fix this never settles: the test times out.
      await db.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
