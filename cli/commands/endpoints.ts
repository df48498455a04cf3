/** `scalar endpoints create | ls | get | rm`. */
import { type Connection, type Endpoint, type EndpointCreate, ok } from "../api/client";
import { type CommandSpec, choiceOption, idOf, intOption, stringOption } from "../args";
import { type Context, printJson } from "../context";
import { EXIT } from "../errors";
import { age, keyValues, nextPageCommand, shorten, table } from "../output";
import { TIERS, WORKLOAD_OPTIONS, workloadBody } from "./workload";

export function endpointCreateBody(
  name: string,
  values: Parameters<typeof workloadBody>[0],
  rest: string[],
): EndpointCreate {
  const num = (flag: string, min: number, max: number) => intOption(values, flag, { min, max });
  const minReplicas = num("min-replicas", 0, 64);
  const maxReplicas = num("max-replicas", 1, 64);
  const port = num("port", 1, 65535);
  const healthPath = stringOption(values, "health-path");
  return {
    name,
    ...workloadBody(values),
    ...(rest.length > 0 ? { command: rest } : {}),
    ...(minReplicas !== undefined ? { min_replicas: minReplicas } : {}),
    ...(maxReplicas !== undefined ? { max_replicas: maxReplicas } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(healthPath ? { health_path: healthPath } : {}),
  };
}

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
    "min-replicas": { type: "string", value: "N", description: "replicas always placed, 0–64 (default 1)" },
    "max-replicas": { type: "string", value: "N", description: "at most, 1–64 (default 1)" },
    port: { type: "string", value: "P", description: "the port the container serves on (default 8000)" },
    "health-path": { type: "string", value: "PATH", description: "health check path (default /health)" },
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
    limit: { type: "string", value: "N", description: "per page, 1–100 (default 20)" },
    cursor: { type: "string", value: "C", description: "the next page" },
  },
  examples: ["scalar endpoints ls", "scalar endpoints ls --status all --json"],
  async run(ctx, { values }) {
    const status = choiceOption(values, "status", ["active", "deleted", "all"] as const);
    const tier = choiceOption(values, "tier", TIERS);
    const limit = intOption(values, "limit", { min: 1, max: 100 });
    const cursor = stringOption(values, "cursor");
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/endpoints", {
        params: {
          query: {
            ...(status ? { status } : {}),
            ...(tier ? { tier } : {}),
            ...(limit !== undefined ? { limit } : {}),
            ...(cursor ? { cursor } : {}),
          },
        },
      }),
    );
    if (ctx.json) {
      printJson(ctx, page);
      return EXIT.ok;
    }
    if (page.data.length === 0) ctx.io.stderr("no endpoints\n");
    else ctx.io.stdout(endpointsTable(page.data, ctx.io.now()));
    if (page.next_cursor) {
      ctx.io.stderr(`more: ${nextPageCommand(endpointsLs, values, page.next_cursor)}\n`);
    }
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
        ["health", e.health_path],
        ["synced", e.synced ? "yes" : "not yet"],
        ["created", e.created_at],
      ]),
    );
    for (const r of e.replicas ?? []) {
      ctx.io.stdout(
        `replica ${r.replica_id}  ${r.status}${r.status === "running" ? readiness(r.ready) : ""}${r.node_id ? ` on ${r.node_id}` : ""}${r.waiting_reason ? ` (${r.waiting_reason})` : ""}\n`,
      );
    }
    return EXIT.ok;
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
