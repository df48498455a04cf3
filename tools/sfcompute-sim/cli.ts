/**
 * `npm run sim -- --port P --token T --seed S [--boot-seconds N] [--clock virtual] [--start ISO]
 *   [--balance-cents C] [--rate-limit N] [--error-style current|flat|legacy] [--host H]`
 * Serves the simulated SF Compute API until interrupted.
 */
import { parseArgs } from "node:util";
import type { ErrorStyle } from "./errors";
import { startSimulatorServer } from "./server";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8080" },
    host: { type: "string", default: "127.0.0.1" },
    token: { type: "string" },
    seed: { type: "string", default: "1" },
    "boot-seconds": { type: "string" },
    clock: { type: "string", default: "real" },
    start: { type: "string" },
    "balance-cents": { type: "string" },
    "rate-limit": { type: "string" },
    "error-style": { type: "string", default: "current" },
  },
  strict: true,
});

function fail(message: string): never {
  console.error(`sfcompute-sim: ${message}`);
  process.exit(2);
}

const num = (name: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) fail(`--${name} must be a non-negative number, got ${v}`);
  return n;
};

if (values.clock !== "real" && values.clock !== "virtual") fail("--clock must be real or virtual");
if (!["current", "flat", "legacy"].includes(values["error-style"]!))
  fail("--error-style must be current, flat or legacy");
const start = values.start === undefined ? undefined : Date.parse(values.start);
if (start !== undefined && Number.isNaN(start)) fail(`--start must be an ISO date-time, got ${values.start}`);
if (start !== undefined && values.clock !== "virtual") fail("--start needs --clock virtual");
const token = values.token ?? process.env.SF_API_KEY ?? "sim-token";
const seed = /^\d+$/.test(values.seed!) ? Number(values.seed) : values.seed!;
const rate = num("rate-limit", values["rate-limit"]);

const running = await startSimulatorServer({
  port: num("port", values.port),
  host: values.host,
  token,
  seed,
  clock: values.clock as "real" | "virtual",
  start,
  bootSeconds: num("boot-seconds", values["boot-seconds"]),
  balanceCents: num("balance-cents", values["balance-cents"]),
  // §12 documents the rate limit (and its headers) on /v0/quote only.
  rateLimit: rate ? { limit: rate, windowMs: 1000, paths: ["/v0/quote"] } : null,
  settings: { errorStyle: values["error-style"] as ErrorStyle },
});
const now = new Date(running.sim.engine.now()).toISOString();
console.log(`sfcompute-sim listening on ${running.url} (clock ${values.clock}, now ${now}, seed ${seed})`);
console.log(`  API      ${running.url}/v0/… and /v1/…   (Authorization: Bearer ${token})`);
console.log(`  events   ${running.url}/_sim/events        (server-sent events)`);
if (values.clock === "virtual") console.log(`  clock    POST ${running.url}/_sim/clock/advance {"seconds": N}`);

const stop = async () => {
  await running.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
