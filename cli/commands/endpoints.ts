/** `scalar endpoints create | ls | get | update | logs | rm`. */
import {
  type Connection,
  type Endpoint,
  type EndpointCreate,
  type EndpointLogLine,
  type EndpointPatch,
  ok,
} from "../api/client";
import { type CommandSpec, choiceOption, idOf, intOption, PAGE_OPTIONS, pageQuery, stringOption } from "../args";
import { type Context, printJson, printPage } from "../context";
import { EXIT, UsageError } from "../errors";
import { age, keyValues, shorten, table } from "../output";
import { showLogs } from "./show-logs";
import { TIERS, WORKLOAD_OPTIONS, workloadBody, workloadChanges } from "./workload";

export function endpointCreateBody(
  name: string,
  values: Parameters<typeof workloadBody>[0],
  rest: string[],
): EndpointCreate {
  return { name, ...workloadBody(values), ...serviceFields(values, rest) };
}

/** `endpoints update`: only the fields given; the region and name stay. */
export function endpointPatchBody(values: Parameters<typeof workloadBody>[0], rest: string[]): EndpointPatch {
  if (stringOption(values, "region")) throw new UsageError("an endpoint's region cannot change (create another)");
  const body = { ...workloadChanges(values), ...serviceFields(values, rest) };
  if (Object.keys(body).length === 0) {
    throw new UsageError("nothing to change: give the options to change (see `scalar endpoints update --help`)");
  }
  return body;
}

function serviceFields(values: Parameters<typeof workloadBody>[0], rest: string[]) {
  const num = (flag: string, min: number, max: number) => intOption(values, flag, { min, max });
  const minReplicas = num("min-replicas", 0, 64);
  const maxReplicas = num("max-replicas", 1, 64);
  const port = num("port", 1, 65535);
  const healthPath = stringOption(values, "health-path");
  const startupTimeout = num("startup-timeout", 10, 86_400);
  return {
    ...(rest.length > 0 ? { command: rest } : {}),
    ...(minReplicas !== undefined ? { min_replicas: minReplicas } : {}),
    ...(maxReplicas !== undefined ? { max_replicas: maxReplicas } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(healthPath ? { health_path: healthPath } : {}),
    ...(startupTimeout !== undefined ? { startup_timeout_s: startupTimeout } : {}),
  };
}

const SERVICE_OPTIONS = {
  "min-replicas": { type: "string", value: "N", description: "replicas always placed, 0–64 (default 1)" },
  "max-replicas": {
    type: "string",
    value: "N",
    description: "at most, 1–64 (default 1; stored: nothing scales above --min-replicas until traffic is routed)",
  },
  port: { type: "string", value: "P", description: "the port the container serves on (default 8000)" },
  "health-path": { type: "string", value: "PATH", description: "readiness check path (default /health)" },
  "startup-timeout": {
    type: "string",
    value: "S",
    description: "seconds a replica may take to pass its check before it is restarted, 10–86400 (default 600)",
  },
} as const;

/**
 * The endpoint an argument names: an id as it is, else the account's active endpoint of that name
 * (active names are unique per account; the API refuses a second one).
 */
function endpointIdOf(conn: Connection, idOrName: string): Promise<string> {
  const byName = async (name: string) =>
    (await ok(conn, conn.api.GET("/v1/endpoints", { params: { query: { name, limit: 1 } } }))).data[0];
  return idOf(idOrName, byName, `no active endpoint is named ${idOrName} (scalar endpoints ls lists them)`);
}

function endpointsTable(rows: Endpoint[], now: number): string {
  return table(
    ["ID", "NAME", "STATUS", "TIER", "GPUS", "REPLICAS", "REGION", "AGE", "IMAGE"],
    rows.map((e) => [
      e.id,
      e.name,
      e.status,
      e.tier,
      String(e.gpu_count),
      `${e.min_replicas}–${e.max_replicas}`,
      e.region,
      age(e.created_at, now),
      shorten(e.image, 50),
    ]),
  );
}

export const endpointsCreate: CommandSpec<Context> = {
  words: ["endpoints", "create"],
  summary: "create an endpoint (a long-lived service kept at min replicas)",
  usage: "NAME --gpus N --image IMG [options] [-- CMD…]",
  positionals: { min: 1, max: 1 },
  rest: true,
  options: {
    ...WORKLOAD_OPTIONS,
    gpus: { type: "string", value: "N", description: "GPUs per replica, 1–8 (a replica runs on one node) (required)" },
    ...SERVICE_OPTIONS,
  },
  examples: ["scalar endpoints create llama-serve --gpus 1 --image ghcr.io/acme/serve:2.0 --port 8000"],
  async run(ctx, { positionals, values, rest }) {
    const body = endpointCreateBody(positionals[0] as string, values, rest);
    const conn = ctx.connection();
    const endpoint = await ok(conn, conn.api.POST("/v1/endpoints", { body }));
    if (ctx.json) printJson(ctx, endpoint);
    else ctx.io.stdout(`${endpoint.id}\n`);
    if (!ctx.json) ctx.io.stderr(`created endpoint ${endpoint.name} (${endpoint.region}, ${endpoint.tier})\n`);
    return EXIT.ok;
  },
};

export const endpointsLs: CommandSpec<Context> = {
  words: ["endpoints", "ls"],
  summary: "list endpoints",
  usage: "[--status active|deleted|all] [--limit N] [--cursor C]",
  positionals: { min: 0, max: 0 },
  options: {
    status: { type: "string", value: "S", description: "active (default), deleted or all" },
    tier: { type: "string", value: "fast|flex", description: "only this tier" },
    ...PAGE_OPTIONS,
  },
  examples: ["scalar endpoints ls", "scalar endpoints ls --status all --json"],
  async run(ctx, { values }) {
    const status = choiceOption(values, "status", ["active", "deleted", "all"] as const);
    const tier = choiceOption(values, "tier", TIERS);
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/endpoints", {
        params: {
          query: {
            ...(status ? { status } : {}),
            ...(tier ? { tier } : {}),
            ...pageQuery(values),
          },
        },
      }),
    );
    printPage(ctx, page, { command: endpointsLs, values, none: "no endpoints", table: endpointsTable });
    return EXIT.ok;
  },
};

export const endpointsGet: CommandSpec<Context> = {
  words: ["endpoints", "get"],
  summary: "show one endpoint and its live replicas",
  usage: "ID|NAME",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: ["scalar endpoints get llama-serve", "scalar endpoints get 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11"],
  async run(ctx, { positionals }) {
    const conn = ctx.connection();
    const id = await endpointIdOf(conn, positionals[0] as string);
    const e = await ok(conn, conn.api.GET("/v1/endpoints/{id}", { params: { path: { id } } }));
    if (ctx.json) {
      printJson(ctx, e);
      return EXIT.ok;
    }
    ctx.io.stdout(
      keyValues([
        ["id", e.id],
        ["name", e.name],
        ["status", e.status],
        ["tier", e.tier],
        ["region", e.region],
        ["image", e.image],
        ["gpus", e.gpu_count],
        ["replicas", `${e.min_replicas}–${e.max_replicas}`],
        ["port", e.port],
        ["health", `GET ${e.health_path}; ready within ${e.startup_timeout_s} s of starting`],
        ["synced", e.synced ? "yes" : "not yet"],
        ["created", e.created_at],
      ]),
    );
    for (const r of e.replicas ?? []) {
      ctx.io.stdout(
        `replica ${r.replica_id}  ${r.status}${r.status === "running" ? readiness(r.ready) : ""}${r.node_id ? ` on ${r.node_id}` : ""}${r.waiting_reason ? ` (${r.waiting_reason})` : ""}${r.restarts > 0 ? `; ${r.restarts} restart${r.restarts === 1 ? "" : "s"}, last: ${r.last_exit ?? "unknown"}` : ""}\n`,
      );
    }
    return EXIT.ok;
  },
};

export const endpointsUpdate: CommandSpec<Context> = {
  words: ["endpoints", "update"],
  summary: "change an endpoint: only the options given (replicas are replaced when their spec changes)",
  usage: "ID|NAME [options] [-- CMD…]",
  positionals: { min: 1, max: 1 },
  rest: true,
  options: {
    ...WORKLOAD_OPTIONS,
    image: { type: "string", value: "IMG", description: "container image" },
    gpus: { type: "string", value: "N", description: "GPUs per replica, 1–8" },
    region: { type: "string", value: "R", description: "cannot change: an endpoint stays in its region" },
    env: {
      type: "string",
      multiple: true,
      value: "K=V",
      description: "environment variable; repeat (replaces them all)",
    },
    label: { type: "string", multiple: true, value: "k=v", description: "label; repeat (replaces them all)" },
    ...SERVICE_OPTIONS,
  },
  examples: [
    "scalar endpoints update llama-serve --min-replicas 2 --max-replicas 4",
    "scalar endpoints update llama-serve --image ghcr.io/acme/serve:2.1",
  ],
  async run(ctx, { positionals, values, rest }) {
    const body = endpointPatchBody(values, rest);
    const conn = ctx.connection();
    const id = await endpointIdOf(conn, positionals[0] as string);
    const e = await ok(conn, conn.api.PATCH("/v1/endpoints/{id}", { params: { path: { id } }, body }));
    if (ctx.json) printJson(ctx, e);
    else
      ctx.io.stdout(
        `endpoint ${e.name} (${e.id}) updated${e.synced ? "" : "; the scheduler gets the change shortly"}\n`,
      );
    return EXIT.ok;
  },
};

export const endpointsLogs: CommandSpec<Context> = {
  words: ["endpoints", "logs"],
  summary: "print an endpoint's logs (all replicas and restarts, each line with its replica); -f follows",
  usage: "ID|NAME [-f]",
  positionals: { min: 1, max: 1 },
  options: {
    follow: { type: "boolean", short: "f", description: "keep streaming new lines (until the endpoint is deleted)" },
  },
  examples: ["scalar endpoints logs llama-serve", "scalar endpoints logs -f llama-serve"],
  async run(ctx, { positionals, values }) {
    const conn = ctx.connection();
    const id = await endpointIdOf(conn, positionals[0] as string);
    return showLogs<EndpointLogLine>(ctx, conn, id, {
      owner: "endpoints",
      follow: values.follow === true,
      text: (line) => `[replica ${line.replica}] ${line.line}`,
      ended: async (status) => `endpoint ${positionals[0]} ${status ?? "ended"}`,
    });
  },
};

export const endpointsRm: CommandSpec<Context> = {
  words: ["endpoints", "rm"],
  summary: "delete an endpoint (its replicas are removed)",
  usage: "ID|NAME",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: ["scalar endpoints rm llama-serve", "scalar endpoints rm 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11"],
  async run(ctx, { positionals }) {
    const conn = ctx.connection();
    const id = await endpointIdOf(conn, positionals[0] as string);
    const e = await ok(conn, conn.api.DELETE("/v1/endpoints/{id}", { params: { path: { id } } }));
    if (ctx.json) printJson(ctx, e);
    else ctx.io.stdout(`endpoint ${e.name} (${e.id}) ${e.status}\n`);
    return EXIT.ok;
  },
};

/** A running replica's readiness check, as `endpoints get` shows it. */
export function readiness(ready: boolean | null | undefined): string {
  return ready === true ? ", ready" : ready === false ? ", not ready" : ", not checked yet";
}
