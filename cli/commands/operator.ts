/**
 * Operator commands (owners and admins of the operator account): `scalar nodes ls | drain | cordon |
 * uncordon` and `scalar dead-letters ls | redrive`. Anyone else gets the API's one-line `forbidden`.
 */
import { type Connection, type DeadLetter, type NodeState, type OperatorNode, ok } from "../api/client";
import { type CommandSpec, choiceOption, isUuid, PAGE_OPTIONS, pageQuery, stringOption } from "../args";
import { type Context, printJson, printPage } from "../context";
import { EXIT, UsageError } from "../errors";
import { age, shorten, table } from "../output";

/** Every node state of the API's spec: the compiler refuses this list when the spec changes. */
const EVERY_STATE = {
  provisioning: true,
  ready: true,
  draining: true,
  lost: true,
  released: true,
} as const satisfies Record<NodeState, true>;
const NODE_STATES = Object.keys(EVERY_STATE) as NodeState[];

/**
 * A node's GPUs as `free/total`, with those held (Fast headroom) and unhealthy ones counted; `-` when
 * its scheduler did not answer.
 */
function gpusCell(n: OperatorNode): string {
  if (!n.live) return `-/${n.gpu_count}`;
  const notes = [
    // An API from before `held_gpus` does not send it.
    [(n.live.held_gpus ?? []).length, "held"],
    [n.live.unhealthy_gpus.length, "unhealthy"],
  ] as const;
  const said = notes.filter(([count]) => count > 0).map(([count, what]) => `${count} ${what}`);
  return `${n.live.free_gpus.length}/${n.gpu_count}${said.length > 0 ? ` (${said.join(", ")})` : ""}`;
}

export function nodesTable(nodes: OperatorNode[], now: number): string {
  return table(
    ["ID", "REGION", "ZONE", "MODEL", "FREE/GPUS", "STATE", "RUNNING", "HEARTBEAT", "AGE"],
    nodes.map((n) => [
      n.id,
      n.region,
      n.zone,
      n.gpu_model,
      gpusCell(n),
      // The scheduler's live state when it differs from the record (e.g. lost before Postgres knows).
      n.live && n.live.state !== n.state ? `${n.state} (live: ${n.live.state})` : n.state,
      n.live ? String(n.live.placements.length) : "-",
      n.live?.last_heartbeat_at ? `${age(n.live.last_heartbeat_at, now)} ago` : "-",
      age(n.created_at, now),
    ]),
  );
}

export function deadLettersTable(letters: DeadLetter[], now: number): string {
  return table(
    ["JOB", "ACCOUNT", "REGION", "ATTEMPTS", "DEAD-LETTERED", "LAST REASON"],
    letters.map((d) => [
      d.job_id,
      d.account_id,
      d.region,
      String(d.attempts),
      `${age(d.dead_lettered_at, now)} ago`,
      shorten(d.reasons.at(-1) ?? "-", 60),
    ]),
  );
}

export const nodesLs: CommandSpec<Context> = {
  words: ["nodes", "ls"],
  summary: "list the fleet's nodes with their live state (operators)",
  usage: "[--region R] [--state S] [--limit N] [--cursor C]",
  positionals: { min: 0, max: 0 },
  options: {
    region: { type: "string", value: "R", description: "only this region" },
    state: { type: "string", value: "S", description: `only this state: ${NODE_STATES.join(", ")}` },
    ...PAGE_OPTIONS,
  },
  examples: ["scalar nodes ls", "scalar nodes ls --state ready --json"],
  async run(ctx, { values }) {
    const region = stringOption(values, "region");
    const state = choiceOption(values, "state", NODE_STATES);
    const paging = pageQuery(values);
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/operator/nodes", {
        params: { query: { ...(region ? { region } : {}), ...(state ? { state } : {}), ...paging } },
      }),
    );
    printPage(ctx, page, { command: nodesLs, values, none: "no nodes", table: nodesTable });
    return EXIT.ok;
  },
};

/** `2 placements still running`: what a node taking no new work still runs. */
function stillRunning(node: OperatorNode): string {
  const running = node.live?.placements.length ?? 0;
  return `${running} placement${running === 1 ? "" : "s"} still running`;
}

/**
 * A node action (drain, cordon, uncordon) on the node the one positional names; its answer printed:
 * the node (`--json`), else `line` about it.
 */
async function nodeAction(
  ctx: Context,
  positionals: string[],
  request: (
    conn: Connection,
    path: { params: { path: { id: string } } },
  ) => Promise<{ data?: OperatorNode; error?: unknown; response: Response }>,
  line: (node: OperatorNode) => string,
): Promise<number> {
  const conn = ctx.connection();
  const node = await ok(conn, request(conn, { params: { path: { id: positionals[0] as string } } }));
  if (ctx.json) printJson(ctx, node);
  else ctx.io.stdout(`${line(node)}\n`);
  return EXIT.ok;
}

export const nodesDrain: CommandSpec<Context> = {
  words: ["nodes", "drain"],
  summary: "drain a node: nothing new is placed on it, running work finishes (operators)",
  usage: "NODE_ID",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: ["scalar nodes drain node-7f3a9c"],
  run: (ctx, { positionals }) =>
    nodeAction(
      ctx,
      positionals,
      (conn, path) => conn.api.POST("/v1/operator/nodes/{id}/drain", path),
      (node) => `node ${node.id} draining; ${stillRunning(node)}`,
    ),
};

export const nodesCordon: CommandSpec<Context> = {
  words: ["nodes", "cordon"],
  summary: "cordon a node: nothing new is placed on it until uncordoned, running work runs on (operators)",
  usage: "NODE_ID [--reason TEXT]",
  positionals: { min: 1, max: 1 },
  options: {
    reason: {
      type: "string",
      value: "TEXT",
      description: "why, for other operators and the audit log (1-500 characters)",
    },
  },
  examples: ["scalar nodes cordon node-7f3a9c --reason 'inspecting NVLink errors'"],
  run(ctx, { positionals, values }) {
    const reason = stringOption(values, "reason");
    return nodeAction(
      ctx,
      positionals,
      (conn, path) =>
        conn.api.POST("/v1/operator/nodes/{id}/cordon", {
          ...path,
          ...(reason !== undefined ? { body: { reason } } : {}),
        }),
      (node) => `node ${node.id} cordoned; ${stillRunning(node)} (scalar nodes uncordon ${node.id} to lift)`,
    );
  },
};

export const nodesUncordon: CommandSpec<Context> = {
  words: ["nodes", "uncordon"],
  summary: "lift an operator's cordon: the node takes new work again (operators)",
  usage: "NODE_ID",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: ["scalar nodes uncordon node-7f3a9c"],
  run: (ctx, { positionals }) =>
    nodeAction(
      ctx,
      positionals,
      (conn, path) => conn.api.POST("/v1/operator/nodes/{id}/uncordon", path),
      (node) => {
        const state = node.live?.state ?? node.state;
        // A hung engine's cordon is not the operator's to lift: it ends when the engine answers.
        if (state === "cordoned")
          return `node ${node.id} uncordoned; still cordoned: its container engine does not answer`;
        return `node ${node.id} uncordoned; ${state === "ready" ? "it takes new work" : state}`;
      },
    ),
};

export const deadLettersLs: CommandSpec<Context> = {
  words: ["dead-letters", "ls"],
  summary: "list dead-lettered jobs, newest first, with their last failure (operators)",
  usage: "[--region R] [--account ID] [--limit N] [--cursor C]",
  positionals: { min: 0, max: 0 },
  options: {
    region: { type: "string", value: "R", description: "only this region" },
    account: { type: "string", value: "ID", description: "only this account's jobs" },
    ...PAGE_OPTIONS,
  },
  examples: ["scalar dead-letters ls", "scalar dead-letters ls --json   # every attempt's reason"],
  async run(ctx, { values }) {
    const region = stringOption(values, "region");
    const account = stringOption(values, "account");
    if (account !== undefined && !isUuid(account)) throw new UsageError(`--account takes an account id (a UUID)`);
    const paging = pageQuery(values);
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/operator/dead-letters", {
        params: {
          query: { ...(region ? { region } : {}), ...(account ? { account_id: account } : {}), ...paging },
        },
      }),
    );
    printPage(ctx, page, { command: deadLettersLs, values, none: "no dead-lettered jobs", table: deadLettersTable });
    return EXIT.ok;
  },
};

export const deadLettersRedrive: CommandSpec<Context> = {
  words: ["dead-letters", "redrive"],
  summary: "put a dead-lettered job back in its queue with fresh attempts (operators)",
  usage: "JOB_ID",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: ["scalar dead-letters redrive 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11"],
  async run(ctx, { positionals }) {
    const id = positionals[0] as string;
    if (!isUuid(id)) throw new UsageError("redrive takes the job's id (a UUID), as dead-letters ls shows it");
    const conn = ctx.connection();
    const result = await ok(
      conn,
      conn.api.POST("/v1/operator/dead-letters/{id}/redrive", { params: { path: { id } } }),
    );
    if (ctx.json) printJson(ctx, result);
    else ctx.io.stdout(`job ${result.job_id} re-driven: ${result.status} (scalar jobs get ${result.job_id})\n`);
    return EXIT.ok;
  },
};
