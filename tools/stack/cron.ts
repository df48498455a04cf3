/**
 * The stack's cron: `wrangler dev` does not fire Cron Triggers by itself, so the stack fires each
 * expression of wrangler.toml's `[triggers] crons` through miniflare's trigger endpoint
 * (`/cdn-cgi/handler/scheduled?cron=…&time=…`, always on in wrangler dev), with `time` = the market
 * simulator's present, so the Worker's capacity cycle (CAPACITY_CLOCK=trigger) runs on market time.
 * Ticks never overlap: a cycle that takes longer than the interval delays the next one.
 */
import { readFileSync } from "node:fs";

/** The `crons` of wrangler.toml's `[triggers]` table. */
export function readCrons(wranglerToml: string): string[] {
  const text = readFileSync(wranglerToml, "utf8");
  return parseCrons(text);
}

export function parseCrons(toml: string): string[] {
  const lines = toml.split("\n");
  let inTriggers = false;
  let collecting: string | null = null;
  for (const raw of lines) {
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (collecting !== null) {
      collecting += ` ${line}`;
      if (line.includes("]")) break;
      continue;
    }
    if (/^\[.*\]$/.test(line)) {
      inTriggers = line === "[triggers]";
      continue;
    }
    if (inTriggers && /^crons\s*=/.test(line)) {
      collecting = line.slice(line.indexOf("=") + 1);
      if (line.includes("]")) break;
    }
  }
  if (collecting === null) return [];
  const body = /\[(.*)\]/s.exec(collecting)?.[1] ?? "";
  return [...body.matchAll(/"([^"]*)"|'([^']*)'/g)].map((m) => m[1] ?? m[2] ?? "").filter(Boolean);
}

export interface CronTicker {
  /** Fire every expression now (after any tick in flight) and wait for the Worker to finish. */
  tick(): Promise<void>;
  stop(): Promise<void>;
  /** Ticks fired so far, and the last failure (null when the last tick succeeded). */
  stats(): { ticks: number; lastError: string | null };
}

export function startCronTicker(opts: {
  apiUrl: string;
  crons: string[];
  intervalMs: number;
  /** The trigger's scheduledTime: the market's present. */
  now: () => number;
  log: (line: string) => void;
}): CronTicker {
  let chain: Promise<void> = Promise.resolve();
  let ticks = 0;
  let lastError: string | null = null;
  let stopped = false;

  const fireOnce = async () => {
    for (const cron of opts.crons) {
      const url = `${opts.apiUrl}/cdn-cgi/handler/scheduled?cron=${encodeURIComponent(cron)}&time=${Math.floor(opts.now())}`;
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(120_000) });
        const body = await res.text();
        if (res.status !== 200) throw new Error(`${res.status} ${body.slice(0, 200)}`);
        lastError = null;
      } catch (error) {
        lastError = `cron "${cron}": ${error instanceof Error ? error.message : String(error)}`;
        if (!stopped) opts.log(`cron trigger failed: ${lastError}`);
      }
    }
    ticks += 1;
  };
  const tick = () => {
    chain = chain.then(fireOnce);
    return chain;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = () => {
    timer = setTimeout(async () => {
      await tick();
      if (!stopped) schedule();
    }, opts.intervalMs);
  };
  schedule();
  return {
    tick,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await chain.catch(() => {});
    },
    stats: () => ({ ticks, lastError }),
  };
}
