/**
 * `npm start`: the whole platform on this machine. Embedded Postgres (or DATABASE_URL), migrations,
 * and `wrangler dev` with the API, the region scheduler and the crons. Ctrl-C stops everything it
 * started.
 */
import { DatabaseStartError, isPortFree } from "../db/embedded";
import { openDevDatabase } from "../db/local";
import { migrate } from "../db/migrate";
import { createDevSession } from "../token-issuer/dev-session";
import { startTokenIssuer } from "../token-issuer/server";
import type { ManagedProcess } from "./processes";
import { startWranglerDev } from "./wrangler";

const API_PORT = Number(process.env.SCALAR_API_PORT ?? 8787);
const INSPECTOR_PORT = Number(process.env.SCALAR_INSPECTOR_PORT ?? 8789);
/** The local stand-in for Supabase Auth's keys; Supabase's own local API port when free. */
const AUTH_PORT = Number(process.env.SCALAR_AUTH_PORT ?? 54321);

const step = (what: string) => {
  const started = Date.now();
  process.stdout.write(`• ${what}… `);
  return (detail = "") =>
    console.log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s${detail ? ` (${detail})` : ""}`);
};

const cleanups: (() => Promise<void>)[] = [];
let stopping = false;
async function stopAll(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    console.log("\nStopping…");
    for (const cleanup of cleanups.reverse()) await cleanup().catch((e) => console.error(String(e)));
    console.log("Stopped.");
  }
  process.exit(code);
}
process.on("SIGINT", () => void stopAll(0));
process.on("SIGTERM", () => void stopAll(0));

try {
  if (!(await isPortFree(API_PORT))) {
    throw new DatabaseStartError(
      `Port ${API_PORT} is busy (another \`npm start\`?). Stop it, or choose another port with SCALAR_API_PORT.`,
    );
  }
  let done = step(process.env.DATABASE_URL ? "Connecting to DATABASE_URL" : "Starting the embedded Postgres");
  const db = await openDevDatabase();
  cleanups.push(() => db.stop());
  done(new URL(db.url).host);

  done = step("Applying migrations");
  const migrated = await migrate(db.url);
  done(`${migrated.applied.length} applied, ${migrated.skipped.length} already there`);

  done = step("Starting the token issuer (Supabase-shaped access tokens)");
  const issuer = await startTokenIssuer({ port: (await isPortFree(AUTH_PORT)) ? AUTH_PORT : 0 });
  cleanups.push(() => issuer.close());
  done(issuer.url);

  done = step("Starting wrangler dev (API, region scheduler, crons)");
  const wrangler = await startWranglerDev({
    port: API_PORT,
    inspectorPort: INSPECTOR_PORT,
    databaseUrl: db.url,
    vars: { SUPABASE_URL: issuer.url },
  });
  cleanups.push(() => wrangler.process.stop());
  done(wrangler.url);
  watchForCrash(wrangler.process);

  done = step("Creating the development user, a token and an API key");
  const session = await createDevSession({ apiUrl: wrangler.url, databaseUrl: db.url, issuer });
  done(session.accountId);

  const health = await (await fetch(`${wrangler.url}/healthz`)).json();
  console.log(`
Scalar is running.

  API            ${wrangler.url}          (health: ${wrangler.url}/healthz → ${(health as { status: string }).status})
  Postgres       ${redact(db.url)}
  Logs           ${wrangler.process.logFile}
  API reference  ${wrangler.url}/docs

  API key        ${session.apiKey}
  Access token   ${session.token}
                 (the development user: owner of an operator account entitled to Fast; 12 h)

  Try: curl -H "Authorization: Bearer ${session.apiKey}" ${wrangler.url}/v1/me

Press Ctrl-C to stop everything.`);
} catch (error) {
  console.log("failed");
  console.error(`\n${error instanceof Error ? error.message : String(error)}`);
  await stopAll(1);
}

function watchForCrash(proc: ManagedProcess) {
  proc.exited.then((code) => {
    if (stopping) return;
    console.error(`\n${proc.name} exited unexpectedly (code ${code}); see ${proc.logFile}`);
    void stopAll(1);
  });
}

function redact(url: string): string {
  const u = new URL(url);
  u.password = "***";
  return u.toString();
}
