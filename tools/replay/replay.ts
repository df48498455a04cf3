/**
 * `npm run replay -- --jobs FILE --nodes FILE|COUNT [--policy scalar|best-fit|first-fit] [--static]
 *                    [--zones N] [--limit N]`
 *
 * Replays a job trace through the real packer on a fixed fleet and prints one JSON object. The
 * formats (and the raw Philly and Alibaba files it also reads) are in docs/scheduler.md and
 * tools/replay/trace.ts; the method in simulate.ts. `--nodes COUNT` is COUNT 8-GPU H100 nodes
 * spread over `--zones` zones (default 1); `--limit` keeps the first N jobs.
 */
import { existsSync } from "node:fs";
import { parseArgs } from "node:util";
import { POLICIES, type Policy } from "../../core/scheduler";
import { fleetOf, replayDynamic, replayStatic } from "./simulate";
import { readCsv, toJobs, toNodes } from "./trace";

const { values } = parseArgs({
  options: {
    jobs: { type: "string" },
    nodes: { type: "string" },
    policy: { type: "string", default: "scalar" },
    static: { type: "boolean", default: false },
    zones: { type: "string", default: "1" },
    limit: { type: "string" },
  },
});

function fail(message: string): never {
  console.error(`replay: ${message}`);
  console.error(
    "usage: npm run replay -- --jobs FILE --nodes FILE|COUNT [--policy scalar|best-fit|first-fit] [--static] [--zones N] [--limit N]",
  );
  process.exit(2);
}

if (!values.jobs) fail("--jobs is required");
if (!values.nodes) fail("--nodes is required");
if (!POLICIES.includes(values.policy as Policy)) fail(`--policy must be one of ${POLICIES.join(", ")}`);
const policy = values.policy as Policy;
const zones = Number(values.zones);
if (!Number.isInteger(zones) || zones < 1) fail("--zones must be a positive integer");

if (!existsSync(values.jobs)) fail(`no such file: ${values.jobs}`);
let jobs = toJobs(readCsv(values.jobs));
if (values.limit) jobs = jobs.slice(0, Number(values.limit));
const count = Number(values.nodes);
if (!(Number.isInteger(count) && count > 0) && !existsSync(values.nodes)) {
  fail(`--nodes must be a positive node count or a nodes CSV: ${values.nodes}`);
}
const nodes = fleetOf(Number.isInteger(count) && count > 0 ? count : toNodes(readCsv(values.nodes)), { zones });

const started = process.hrtime.bigint();
const result = values.static ? replayStatic(jobs, nodes, policy) : replayDynamic(jobs, nodes, policy);
const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ ...result, replay_seconds: Math.round(elapsed * 10) / 10 }, null, 2));
