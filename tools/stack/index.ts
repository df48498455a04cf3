/**
 * The whole platform on one machine, as a library: `npm start` wraps it, the end-to-end test and the
 * load test drive it. It starts, in order: Postgres (embedded, or DATABASE_URL) and the migrations;
 * the token issuer; the SF Compute simulator in-process over HTTP on a virtual clock kept in step
 * with real time; `wrangler dev` (API, region scheduler, crons) pointed at both; the cron ticker;
 * the VM host (a node agent per VM the simulator boots, on the local Docker engine); and the
 * development account with its credentials. `stop()` undoes all of it, agents' containers included.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import postgres from "postgres";
import { newKeyEntry } from "../../workers/auth/env-secrets";
import { type EmbeddedDb, freePort, isPortFree, startEmbeddedPostgres } from "../db/embedded";
import { openDevDatabase, ROOT, STATE_DIR } from "../db/local";
import { migrate } from "../db/migrate";
import { startPgPool } from "../hyperdrive-pool/pool";
import { logTail, type ManagedProcess } from "../launcher/processes";
import { startWranglerDev } from "../launcher/wrangler";
import { type RunningSimulator, startSimulatorServer } from "../sfcompute-sim/server";
import { startStripeSimulator } from "../stripe-sim/server";
import { detectDocker } from "../test/docker";
import { createDevSession } from "../token-issuer/dev-session";
import { startTokenIssuer, type TokenIssuerServer } from "../token-issuer/server";
import { type CronTicker, readCrons, startCronTicker } from "./cron";
import { driveMarketClock, type MarketClock } from "./market-clock";
import { type AgentInfo, startVmHost, type VmHost } from "./vm-host";

export interface StackOptions {
  /** Default <repo>/.scalar/stack; tests pass a temp dir. */
  stateDir?: string;
  /** Default 8787; 0 = pick a free port (and free ports for everything else too). */
  apiPort?: number;
  /** "auto": node agents on the local Docker engine when one answers. */
  docker?: "auto" | "off";
  /** Fast headroom the autoscaler keeps (npm start: 8 = one warm node; e2e: 0). */
  fastHeadroomGpus?: number;
  /** How often the stack fires the cron triggers (default 60_000). */
  cronIntervalMs?: number;
  /** Simulated VM boot, seconds (default 5). */
  simBootSeconds?: number;
  /** Where to save {api_url, api_key} for the CLI; null: nowhere. Default <repo>/.scalar/credentials.json
   * with the default stateDir, else <stateDir>/credentials.json. */
  credentialsFile?: string | null;
  log?: (line: string) => void;
}

export interface Stack {
  apiUrl: string;
  databaseUrl: string;
  simUrl: string;
  /** The Stripe stand-in (tools/stripe-sim) the billing cron hands invoices to. */
  stripeUrl: string;
  /** Bearer token of the simulator's account (the Worker's SF_API_KEY). */
  simToken: string;
  issuerUrl: string;
  /** The seeded development account (owner, operator, Fast). */
  apiKey: string;
  token: string;
  accountId: string;
  /** The small image in the local registry, when Docker is up. */
  image: string | null;
  docker: { available: boolean; host: string; detail: string };
  /** Where the credentials were saved (null: not saved). */
  credentialsFile: string | null;
  stateDir: string;
  /** Log files of the stack's own processes (wrangler), for failure messages. */
  logs: { wrangler: string };
  /** Settles with a message if wrangler dev exits while the stack runs (it never settles otherwise). */
  crashed: Promise<string>;
  agents(): { nodeId: string; pid: number; logFile: string }[];
  /** Fire the cron trigger now and wait for it. */
  tickCron(): Promise<void>;
  /** Jump the simulator's clock ahead by ms. */
  advanceMarket(ms: number): Promise<void>;
  /** The simulator's present (epoch ms). */
  marketNow(): number;
  /** Until n of this stack's agents are registered and ready. */
  waitForNodes(n: number, timeoutMs: number): Promise<void>;
  /** The last lines of every log (wrangler, agents), for a failing test's message. */
  logTails(lines?: number): string;
  stop(): Promise<void>;
}

export const DEFAULT_STACK_DIR = resolve(STATE_DIR, "stack");
export const DEFAULT_CREDENTIALS_FILE = resolve(STATE_DIR, "credentials.json");
const DEFAULT_API_PORT = 8787;
const DEFAULT_INSPECTOR_PORT = 8789;
const DEFAULT_AUTH_PORT = 54321;

/**
 * The key that seals secret environment values (`ENV_SECRETS_KEYS`, workers/auth/env-secrets.ts):
 * made once per state folder and kept beside its database, so a restart still opens what it sealed.
 */
export function localSecretsKey(stateDir: string): string {
  const file = resolve(stateDir, "env-secrets-keys");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const entry = newKeyEntry("local");
  writeFileSync(file, `${entry}\n`, { mode: 0o600 });
  return entry;
}

/** The Worker's INGRESS_SECRET for this state folder (node ingress keys derive from it), made once. */
export function localIngressSecret(stateDir: string): string {
  const file = resolve(stateDir, "ingress-secret");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const secret = randomBytes(32).toString("hex");
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  return secret;
}

/** The signing secret of the Stripe stand-in's webhook endpoint (the API's STRIPE_WEBHOOK_SECRET), kept per state folder. */
export function localStripeWebhookSecret(stateDir: string): string {
  const file = resolve(stateDir, "stripe-webhook-secret");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const secret = `whsec_${randomBytes(24).toString("hex")}`;
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  return secret;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const log = opts.log ?? (() => {});
  const stateDir = resolve(opts.stateDir ?? DEFAULT_STACK_DIR);
  const isDefaultDir = stateDir === DEFAULT_STACK_DIR;
  const anyPorts = opts.apiPort === 0;
  const fastHeadroomGpus = opts.fastHeadroomGpus ?? 8;
  const cronIntervalMs = opts.cronIntervalMs ?? 60_000;
  if (!Number.isInteger(fastHeadroomGpus) || fastHeadroomGpus < 0) {
    throw new RangeError(`fastHeadroomGpus must be a whole number ≥ 0, not ${fastHeadroomGpus}`);
  }
  if (!(cronIntervalMs >= 500)) throw new RangeError(`cronIntervalMs must be at least 500, not ${cronIntervalMs}`);
  mkdirSync(stateDir, { recursive: true });
  const instanceId = randomBytes(3).toString("hex");

  const cleanups: (() => Promise<void>)[] = [];
  let stopped = false;
  const stopAll = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      await cleanup().catch((e: unknown) => log(`while stopping: ${e instanceof Error ? e.message : String(e)}`));
    }
  };
  const step = async <T>(what: string, fn: () => Promise<T>, detail?: (t: T) => string): Promise<T> => {
    const started = Date.now();
    const t = await fn();
    log(`${what}: done in ${((Date.now() - started) / 1000).toFixed(1)} s${detail ? ` (${detail(t)})` : ""}`);
    return t;
  };

  try {
    const apiPort = anyPorts ? await freePort() : (opts.apiPort ?? DEFAULT_API_PORT);
    if (!(await isPortFree(apiPort))) {
      throw new Error(
        `Port ${apiPort} is busy (another \`npm start\`?). Stop it, or choose another port (npm start: SCALAR_API_PORT).`,
      );
    }

    // 1. Postgres and the migrations: the development database (or DATABASE_URL) for the default
    // state dir; a throw-away one of its own for any other (tests never touch a shared database).
    const db: EmbeddedDb & { started?: boolean } = await step(
      isDefaultDir && process.env.DATABASE_URL ? "Postgres (DATABASE_URL)" : "Postgres (embedded)",
      async () =>
        isDefaultDir
          ? openDevDatabase()
          : {
              ...(await startEmbeddedPostgres({
                dataDir: resolve(stateDir, "pg"),
                port: await freePort(),
                ephemeral: true,
              })),
              started: true,
            },
      (d) => new URL(d.url).host,
    );
    cleanups.push(() => db.stop());
    await step(
      "Migrations",
      () => migrate(db.url),
      (m) => `${m.applied.length} applied, ${m.skipped.length} already there`,
    );

    // 2. The token issuer.
    const issuer: TokenIssuerServer = await step(
      "Token issuer",
      async () =>
        startTokenIssuer({ port: !anyPorts && (await isPortFree(DEFAULT_AUTH_PORT)) ? DEFAULT_AUTH_PORT : 0 }),
      (i) => i.url,
    );
    cleanups.push(() => issuer.close());

    // 3. The market: the simulator on a virtual clock in step with real time.
    const simToken = `sim-${randomBytes(12).toString("hex")}`;
    const sim: RunningSimulator = await step(
      "SF Compute simulator",
      () =>
        startSimulatorServer({
          clock: "virtual",
          start: Date.now(),
          seed: 7,
          // New ids each start: the state folder's database remembers the last run's nodes by their ids.
          idSeed: randomBytes(8).toString("hex"),
          token: simToken,
          bootSeconds: opts.simBootSeconds ?? 5,
          settings: { market: { matchDelayMs: [100, 300] } },
        }),
      (s) => s.url,
    );
    cleanups.push(() => sim.close());
    const clock: MarketClock = driveMarketClock(sim.sim.engine, { log });
    cleanups.push(async () => clock.stop());

    // Stripe's stand-in, for the monthly invoices (workers/billing): the real SDK, this base URL.
    // Its invoice events go to the API's webhook route, signed as Stripe signs them (retried until
    // wrangler answers).
    const stripeWebhookSecret = localStripeWebhookSecret(stateDir);
    const stripeSim = await step(
      "Stripe stand-in",
      () =>
        startStripeSimulator({
          port: 0,
          webhooks: [{ url: `http://127.0.0.1:${apiPort}/v1/stripe/webhooks`, secret: stripeWebhookSecret }],
        }),
      (s) => s.url,
    );
    cleanups.push(() => stripeSim.close());

    // 4. Docker (for the agents) before wrangler, so a slow engine start does not hold the API.
    const docker =
      opts.docker === "off"
        ? { available: false, host: "", detail: 'off (docker: "off")', registry: false, image: "" }
        : await step(
            "Docker engine",
            () => detectDocker({ start: true, log }),
            (d) => (d.available ? d.detail : "none"),
          );
    if (!docker.available) {
      log(`No Docker engine is reachable (${docker.detail}): the control plane runs, but no node agents start.`);
    }
    const dockerSocket = docker.available ? docker.host.replace(/^unix:\/\//, "") : null;

    // 5. wrangler dev: the API, the region scheduler and the crons; its Hyperdrive binding reaches
    // Postgres through a local pool, as Hyperdrive's own pooling does in production.
    // SCALAR_PG_POOL=off: straight to Postgres, a new backend per request (wrangler's own stand-in).
    const pgPool = process.env.SCALAR_PG_POOL === "off" ? null : await startPgPool({ target: db.url });
    if (pgPool) cleanups.push(() => pgPool.close());
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    const inspectorPort =
      !anyPorts && (await isPortFree(DEFAULT_INSPECTOR_PORT)) ? DEFAULT_INSPECTOR_PORT : await freePort();
    const wrangler = await step(
      "wrangler dev",
      () =>
        startWranglerDev({
          port: apiPort,
          inspectorPort,
          databaseUrl: pgPool?.url ?? db.url,
          stateDir: resolve(stateDir, "wrangler"),
          vars: {
            SUPABASE_URL: issuer.url,
            SF_API_KEY: simToken,
            SF_API_BASE_URL: sim.url,
            SCALAR_AGENT_API_URL: apiUrl,
            ENV_SECRETS_KEYS: localSecretsKey(stateDir),
            INGRESS_SECRET: localIngressSecret(stateDir),
            STRIPE_SECRET_KEY: "sk_test_scalar_local",
            STRIPE_API_BASE: stripeSim.url,
            STRIPE_WEBHOOK_SECRET: stripeWebhookSecret,
            CAPACITY_FAST_HEADROOM_GPUS: String(fastHeadroomGpus),
            CAPACITY_CLOCK: "trigger",
          },
        }),
      (w) => w.url,
    );
    cleanups.push(() => wrangler.process.stop());

    // 6. The VM host, then the cron (the first cycle may buy a node right away).
    const vmHost: VmHost = startVmHost({
      engine: sim.sim.engine,
      apiUrl,
      stateDir,
      dockerSocket,
      instanceId,
      log,
    });
    cleanups.push(() => vmHost.stop());

    // 7. The development account, its credentials.
    const session = await step(
      "Development account",
      () => createDevSession({ apiUrl, databaseUrl: db.url, issuer, revokeEarlierKeys: db.started }),
      (s) => (s.revokedKeys > 0 ? `${s.accountId}; ${s.revokedKeys} earlier npm start key(s) revoked` : s.accountId),
    );
    const credentialsFile =
      opts.credentialsFile === null
        ? null
        : resolve(
            opts.credentialsFile ?? (isDefaultDir ? DEFAULT_CREDENTIALS_FILE : resolve(stateDir, "credentials.json")),
          );
    if (credentialsFile) writeCredentials(credentialsFile, { api_url: apiUrl, api_key: session.apiKey });
    // Only in a database this stack started: one already running may belong to a stack that is still up.
    if (db.started) {
      const forgotten = await forgetPreviousMarket(db.url, apiUrl, session.apiKey);
      if (forgotten > 0)
        log(`${forgotten} node(s) of an earlier run's market drained and released (that market is gone)`);
    }

    const crons = readCrons(resolve(ROOT, "wrangler.toml"));
    const ticker: CronTicker = startCronTicker({
      apiUrl,
      crons,
      intervalMs: cronIntervalMs,
      now: () => clock.now(),
      log,
    });
    cleanups.push(() => ticker.stop());
    // The first cycle now, not a whole interval later (it buys the warm node with headroom > 0).
    void ticker.tick();

    const agents = (): AgentInfo[] => vmHost.agents();
    const stack: Stack = {
      apiUrl,
      databaseUrl: db.url,
      simUrl: sim.url,
      stripeUrl: stripeSim.url,
      simToken,
      issuerUrl: issuer.url,
      apiKey: session.apiKey,
      token: session.token,
      accountId: session.accountId,
      image: docker.available && docker.registry ? docker.image : null,
      docker: { available: docker.available, host: docker.host, detail: docker.detail },
      credentialsFile,
      stateDir,
      logs: { wrangler: wrangler.process.logFile },
      crashed: new Promise<string>((done) => {
        wrangler.process.exited.then((code) => {
          if (!stopped) done(`wrangler dev exited unexpectedly (code ${code}); see ${wrangler.process.logFile}`);
        });
      }),
      agents: () => agents().map(({ nodeId, pid, logFile }) => ({ nodeId, pid, logFile })),
      tickCron: () => ticker.tick(),
      async advanceMarket(ms) {
        clock.jump(ms);
      },
      marketNow: () => clock.now(),
      waitForNodes: (n, timeoutMs) => waitForReadyNodes(apiUrl, session.apiKey, agents, n, timeoutMs, wrangler.process),
      logTails(lines = 30) {
        const parts = [`--- wrangler (${wrangler.process.logFile}) ---\n${logTail(wrangler.process.logFile, lines)}`];
        for (const a of agents()) parts.push(`--- agent ${a.nodeId} (${a.logFile}) ---\n${logTail(a.logFile, lines)}`);
        return parts.join("\n");
      },
      async stop() {
        stopped = true;
        await stopAll();
      },
    };
    return stack;
  } catch (error) {
    await stopAll();
    throw error;
  }
}

function writeCredentials(file: string, creds: { api_url: string; api_key: string }): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(creds, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
}

/**
 * The simulator starts empty each run: nodes an earlier run bought (rows not released, open
 * capacity orders, live blocks) belong to a market that no longer exists. Left alone, the region
 * scheduler (whose state persists) would place work on them until their heartbeats time out, and the
 * capacity manager would wait for them or re-send their orders to the new market. So: drain them
 * through the operator API, then release them, cancel their orders and end their blocks. The next
 * capacity cycle removes released nodes from the region scheduler (`forgetReleased`).
 */
async function forgetPreviousMarket(databaseUrl: string, apiUrl: string, apiKey: string): Promise<number> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const stale = await sql<{ id: string }[]>`
      select id from nodes where id like 'cap-%' and state not in ('released', 'lost')`;
    for (const { id } of stale) {
      // 409 when the scheduler never knew it: nothing to drain.
      await fetch(`${apiUrl}/v1/operator/nodes/${encodeURIComponent(id)}/drain`, {
        method: "POST",
        headers: { authorization: `Bearer ${apiKey}`, "idempotency-key": `stack-forget-${id}-${Date.now()}` },
      })
        .then((r) => r.arrayBuffer())
        .catch(() => {});
    }
    const nodes = await sql`
      update nodes set state = 'released', agent_token_hash = null
       where id like 'cap-%' and state <> 'released' returning id`;
    await sql`update market_orders set status = 'cancelled', cancelled_at = now()
               where status in ('placing', 'pending') and purpose like 'capacity:%'`;
    await sql`update blocks set status = 'expired' where status in ('pending', 'active')`;
    return nodes.length;
  } finally {
    await sql.end({ timeout: 2 });
  }
}

async function waitForReadyNodes(
  apiUrl: string,
  apiKey: string,
  agents: () => AgentInfo[],
  n: number,
  timeoutMs: number,
  wrangler: ManagedProcess,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let seen = "";
  while (Date.now() < deadline) {
    const mine = new Set(agents().map((a) => a.nodeId));
    if (mine.size >= n) {
      const res = await fetch(`${apiUrl}/v1/operator/nodes?limit=100`, {
        headers: { authorization: `Bearer ${apiKey}` },
      }).catch(() => null);
      if (res?.ok) {
        const body = (await res.json()) as { data: { id: string; live: { state: string } | null }[] };
        const ready = body.data.filter((d) => mine.has(d.id) && d.live?.state === "ready");
        seen = `${ready.length} ready of ${mine.size} agents`;
        if (ready.length >= n) return;
      }
    } else {
      seen = `${mine.size} agents started`;
    }
    if (wrangler.child.exitCode !== null) {
      const printed = logTail(wrangler.logFile, 20);
      throw new Error(`wrangler dev exited; see ${wrangler.logFile}${printed ? `; it printed:\n${printed}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`waitForNodes(${n}): not ready after ${Math.round(timeoutMs / 1000)} s (${seen})`);
}
