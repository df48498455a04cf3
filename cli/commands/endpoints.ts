/** `scalar endpoints create | ls | get | update | invoke | logs | rm`. */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import {
  type Connection,
  type Endpoint,
  type EndpointCreate,
  type EndpointLogLine,
  type EndpointPatch,
  ok,
} from "../api/client";
import {
  type CommandSpec,
  choiceOption,
  idOf,
  intOption,
  listOption,
  PAGE_OPTIONS,
  pageQuery,
  stringOption,
} from "../args";
import { type Context, printJson, printPage } from "../context";
import { apiErrorFrom, EXIT, UsageError } from "../errors";
import { age, keyValues, metricsText, shorten, table } from "../output";
import { invokeWebSocket } from "./invoke-ws";
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
  const targetConcurrency = num("target-concurrency", 1, 1_000);
  const scaleDownDelay = num("scale-down-delay", 0, 86_400);
  return {
    ...(rest.length > 0 ? { command: rest } : {}),
    ...(minReplicas !== undefined ? { min_replicas: minReplicas } : {}),
    ...(maxReplicas !== undefined ? { max_replicas: maxReplicas } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(healthPath ? { health_path: healthPath } : {}),
    ...(startupTimeout !== undefined ? { startup_timeout_s: startupTimeout } : {}),
    ...(targetConcurrency !== undefined ? { target_concurrency: targetConcurrency } : {}),
    ...(scaleDownDelay !== undefined ? { scale_down_delay_s: scaleDownDelay } : {}),
  };
}

const SERVICE_OPTIONS = {
  "min-replicas": {
    type: "string",
    value: "N",
    description: "replicas always placed, 0–64 (default 1; 0: none without traffic)",
  },
  "max-replicas": { type: "string", value: "N", description: "the most traffic may scale to, 1–64 (default 1)" },
  "target-concurrency": {
    type: "string",
    value: "N",
    description: "requests in flight per replica before another is started, 1–1000 (default 4)",
  },
  "scale-down-delay": {
    type: "string",
    value: "S",
    description: "seconds replicas outlive the traffic that needed them, 0–86400 (default 300)",
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
  summary: "create an endpoint (a service kept at min replicas, scaled to max by its traffic)",
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
    const paging = pageQuery(values);
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/endpoints", {
        params: {
          query: {
            ...(status ? { status } : {}),
            ...(tier ? { tier } : {}),
            ...paging,
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
        [
          "replicas",
          `${e.min_replicas}–${e.max_replicas}${e.desired_replicas != null ? `, ${e.desired_replicas} wanted now` : ""}`,
        ],
        ["scaling", `${e.target_concurrency} requests in flight per replica; down after ${e.scale_down_delay_s} s`],
        ["port", e.port],
        ["health", `GET ${e.health_path}; ready within ${e.startup_timeout_s} s of starting`],
        ["synced", e.synced ? "yes" : "not yet"],
        ["created", e.created_at],
      ]),
    );
    for (const r of e.replicas ?? []) ctx.io.stdout(replicaLines(r, ctx.io.now()));
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

export const endpointsInvoke: CommandSpec<Context> = {
  words: ["endpoints", "invoke"],
  summary:
    "send one request to an endpoint and print its answer (starts a replica if it has none); --ws: a WebSocket, stdin lines as messages",
  usage: "ID|NAME [PATH] [-X METHOD] [-d DATA|@FILE] [-H 'Name: value' …] [--wait S] [--ws [--protocol P …]]",
  positionals: { min: 1, max: 2 },
  options: {
    request: { type: "string", short: "X", value: "METHOD", description: "HTTP method (default GET, POST with -d)" },
    data: { type: "string", short: "d", value: "DATA", description: "request body; @FILE reads a file, @- stdin" },
    header: { type: "string", short: "H", multiple: true, value: "'N: V'", description: "request header; repeat" },
    wait: {
      type: "string",
      value: "S",
      description: "seconds to wait for a ready replica, 0–600 (default 120: a cold start)",
    },
    include: { type: "boolean", short: "i", description: "print the status line and headers (to stderr) first" },
    ws: {
      type: "boolean",
      description:
        "open a WebSocket instead: each stdin line is sent as a text message, each message received printed; Ctrl-D closes",
    },
    protocol: { type: "string", multiple: true, value: "P", description: "--ws: a subprotocol to offer; repeat" },
  },
  examples: [
    "scalar endpoints invoke llama-serve /health",
    `scalar endpoints invoke llama-serve /v1/completions -d '{"prompt":"hi"}' -H 'content-type: application/json'`,
    "scalar endpoints invoke llama-serve /v1/embed -d @input.json --wait 300",
    'echo \'{"prompt":"hi"}\' | scalar endpoints invoke llama-serve /v1/stream --ws',
  ],
  async run(ctx, { positionals, values }) {
    const ref = positionals[0] as string;
    const path = positionals[1] ?? "/";
    if (!path.startsWith("/")) throw new UsageError(`PATH must start with /, not \`${path}\``);
    const headers = new Headers();
    for (const raw of listOption(values, "header")) {
      const at = raw.indexOf(":");
      if (at <= 0) throw new UsageError(`-H must be 'Name: value', not \`${raw}\``);
      try {
        headers.append(raw.slice(0, at).trim(), raw.slice(at + 1).trim());
      } catch {
        // fetch's own words ("Headers.append: … is an invalid header name.") would not say it was -H.
        throw new UsageError(
          `-H \`${raw}\` is not a valid HTTP header (a name without spaces or separators, a value on one line)`,
        );
      }
    }
    const wait = intOption(values, "wait", { min: 0, max: 600 });
    if (wait !== undefined) headers.set("scalar-wait", String(wait));
    const protocols = listOption(values, "protocol");
    if (values.ws === true) {
      if (values.data !== undefined || values.request !== undefined) {
        throw new UsageError("--ws sends standard input's lines as messages: drop -d and -X");
      }
      return invokeWebSocket(ctx, ctx.connection(), {
        ref,
        path,
        headers,
        protocols,
        include: values.include === true,
      });
    }
    if (protocols.length > 0) throw new UsageError("--protocol is for --ws");
    const data = stringOption(values, "data");
    const body = data === undefined ? undefined : bodyOf(data, ctx.io.cwd);
    const method = (stringOption(values, "request") ?? (body !== undefined ? "POST" : "GET")).toUpperCase();
    if (!/^[A-Z]+$/.test(method)) throw new UsageError(`-X must be an HTTP method, not \`${method}\``);
    if (body !== undefined && (method === "GET" || method === "HEAD")) {
      throw new UsageError(`a ${method} request has no body: drop -d or pass -X POST`);
    }
    const conn = ctx.connection();
    // A cold start can take a while: on a terminal, say what is being waited for.
    const notice = ctx.io.stderrIsTTY
      ? setTimeout(() => ctx.io.stderr(`waiting for a ready replica of ${ref} (a cold start)…\n`), 2_000)
      : undefined;
    let res: Response;
    try {
      // A redirect is the replica's answer, to print: followed, its Location (often a path of the
      // replica's own) would be asked of the API, or of another host with these headers.
      res = await conn.fetch(`/v1/endpoints/${encodeURIComponent(ref)}/invoke${path}`, {
        method,
        headers,
        redirect: "manual",
        ...(body !== undefined ? { body } : {}),
      });
    } finally {
      clearTimeout(notice);
    }
    const replica = res.headers.get("scalar-replica");
    if (!replica) {
      // Not the replica's answer: the API's own error (unknown endpoint, none ready, no scope…).
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {}
      throw apiErrorFrom(res.status, parsed, res.headers.get("x-request-id"));
    }
    if (values.include === true) {
      ctx.io.stderr(`HTTP ${res.status} ${res.statusText} (replica ${replica})\n`);
      // fetch decodes a compressed body itself: what follows is the decoded body, as said here.
      const encoded = res.headers.has("content-encoding");
      res.headers.forEach((value, name) => {
        const note = encoded && (name === "content-encoding" || name === "content-length") ? " (before decoding)" : "";
        ctx.io.stderr(`${name}: ${value}${note}\n`);
      });
      ctx.io.stderr("\n");
    }
    const decoder = new TextDecoder();
    if (res.body) {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        if (ctx.io.stdoutBytes) ctx.io.stdoutBytes(chunk);
        else ctx.io.stdout(decoder.decode(chunk, { stream: true }));
      }
    }
    if (res.status < 300) return EXIT.ok;
    if (res.status < 400) {
      const location = res.headers.get("location");
      ctx.io.stderr(
        `the endpoint answered HTTP ${res.status}${location ? `, location ${location}` : ""} (replica ${replica})\n`,
      );
      return EXIT.ok;
    }
    ctx.io.stderr(`the endpoint answered HTTP ${res.status} (replica ${replica})\n`);
    return EXIT.error;
  },
};

/** `-d`: the text itself, `@FILE` a file's bytes, `@-` standard input's. */
function bodyOf(data: string, cwd: string): string | Blob {
  if (!data.startsWith("@")) return data;
  const file = data.slice(1);
  try {
    return new Blob([readFileSync(file === "-" ? 0 : resolve(cwd, file))]);
  } catch (error) {
    throw new UsageError(`-d ${data}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

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

/** A replica as `endpoints get` shows it; a running one's resource use on a second line. */
export function replicaLines(r: NonNullable<Endpoint["replicas"]>[number], now: number): string {
  const line = `replica ${r.replica_id}  ${r.status}${r.status === "running" ? readiness(r.ready) : ""}${r.node_id ? ` on ${r.node_id}` : ""}${r.waiting_reason ? ` (${r.waiting_reason})` : ""}${r.restarts > 0 ? `; ${r.restarts} restart${r.restarts === 1 ? "" : "s"}, last: ${r.last_exit ?? "unknown"}` : ""}\n`;
  return r.metrics ? `${line}  metrics  ${metricsText(r.metrics, now)}\n` : line;
}

/** A running replica's readiness check, as `endpoints get` shows it. */
export function readiness(ready: boolean | null | undefined): string {
  return ready === true ? ", ready" : ready === false ? ", not ready" : ", not checked yet";
}
