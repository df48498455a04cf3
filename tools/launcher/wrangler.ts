/** `wrangler dev` for the local stack and the tests: offline, on loopback, its state under `.scalar/`. */
import { resolve } from "node:path";
import { ROOT, STATE_DIR } from "../db/local";
import { type ManagedProcess, startProcess, waitUntil } from "./processes";

export interface WranglerDev {
  url: string;
  process: ManagedProcess;
}

export async function startWranglerDev(opts: {
  port: number;
  inspectorPort: number;
  databaseUrl: string;
  vars?: Record<string, string>;
  stateDir?: string;
  logFile?: string;
  timeoutMs?: number;
}): Promise<WranglerDev> {
  const stateDir = opts.stateDir ?? resolve(STATE_DIR, "wrangler");
  const args = [
    resolve(ROOT, "node_modules/wrangler/bin/wrangler.js"),
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(opts.port),
    "--inspector-port",
    String(opts.inspectorPort),
    "--persist-to",
    resolve(stateDir, "state"),
    "--log-level",
    "warn",
    "--show-interactive-dev-session=false",
  ];
  for (const [k, v] of Object.entries(opts.vars ?? {})) args.push("--var", `${k}:${v}`);
  const proc = startProcess("wrangler", process.execPath, args, {
    cwd: ROOT,
    logFile: opts.logFile ?? resolve(stateDir, "wrangler.log"),
    env: {
      CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: opts.databaseUrl,
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
      WRANGLER_HIDE_BANNER: "true",
      XDG_CONFIG_HOME: resolve(stateDir, "config"),
      CI: "true", // no interactive prompts
      FORCE_COLOR: "0",
    },
  });
  const url = `http://127.0.0.1:${opts.port}`;
  await waitUntil(
    "wrangler dev",
    async () => {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5_000) });
      await res.arrayBuffer();
      return res.status === 200 || res.status === 503;
    },
    { timeoutMs: opts.timeoutMs ?? 90_000, intervalMs: 250, process: proc },
  );
  return { url, process: proc };
}
