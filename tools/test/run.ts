/**
 * `npm test`: starts what the tests need, then runs vitest (arguments pass through, e.g.
 * `npm test -- core/scheduler`). It starts a throw-away embedded Postgres on a free port and migrates
 * a template database; the workerd tests get their own copy, and Postgres test files make theirs.
 */
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { resolve } from "node:path";
import postgres from "postgres";
import { freePort, startEmbeddedPostgres } from "../db/embedded";
import { ROOT, STATE_DIR } from "../db/local";
import { migrate } from "../db/migrate";
import { type PgPool, startPgPool } from "../hyperdrive-pool/pool";
import { TEMPLATE_DB, withDatabase } from "./database";
import { detectDocker } from "./docker";
import { inCi } from "./parts";

const started = Date.now();
const dataDir = resolve(STATE_DIR, `pg/test-${process.pid}`);
const port = await freePort();
const log = (line: string) => console.log(`[npm test] ${line}`);

log(`starting embedded Postgres on 127.0.0.1:${port}`);
const db = await startEmbeddedPostgres({ dataDir, port, database: TEMPLATE_DB, ephemeral: true });
let exitCode = 1;
let pgPool: PgPool | null = null;
try {
  const result = await migrate(db.url);
  log(`template database migrated (${result.applied.length} migrations, auth shim ${result.shim})`);
  const adminUrl = withDatabase(db.url, "postgres");
  const workersDb = "scalar_workers";
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database "${workersDb}" template "${TEMPLATE_DB}"`);
  await admin.end();

  // The Worker's Hyperdrive binding goes through a local pool, as Hyperdrive pools in production.
  // SCALAR_PG_POOL=off: straight to Postgres, a new backend per request (wrangler's own stand-in).
  if (process.env.SCALAR_PG_POOL !== "off") pgPool = await startPgPool({ target: withDatabase(db.url, workersDb) });
  const docker = await detectDocker({ start: true, log });
  log(
    docker.available
      ? `Docker engine: ${docker.detail}`
      : `no Docker engine (${docker.detail}); Docker tests ${inCi() ? "will FAIL (CI=true)" : "are skipped"}`,
  );

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    SCALAR_TEST_PG_ADMIN_URL: adminUrl,
    SCALAR_TEST_WORKERS_DATABASE_URL: pgPool?.url ?? withDatabase(db.url, workersDb),
    ...(docker.available ? { SCALAR_TEST_DOCKER: "1", DOCKER_HOST: docker.host } : {}),
    ...(docker.plainHost ? { SCALAR_TEST_DOCKER_PLAIN: docker.plainHost } : {}),
    ...(docker.registry ? { SCALAR_TEST_REGISTRY: "1", SCALAR_TEST_IMAGE: docker.image } : {}),
    WRANGLER_SEND_METRICS: "false",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_HIDE_BANNER: "true",
  };
  const args = ["run", ...process.argv.slice(2)];
  exitCode = await new Promise<number>((done) => {
    const child = spawn(process.execPath, [resolve(ROOT, "node_modules/vitest/vitest.mjs"), ...args], {
      cwd: ROOT,
      env,
      stdio: "inherit",
    });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    child.on("exit", (code, signal) => done(code ?? (signal ? 1 : 0)));
  });
} finally {
  await pgPool?.close().catch(() => {});
  await db.stop().catch(() => {});
  rmSync(dataDir, { recursive: true, force: true });
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
process.exit(exitCode);
