/** `scalar keys create | ls | revoke`: the account's API keys. */
import { type ApiKey, type Connection, ok, type Scope } from "../api/client";
import { type CommandSpec, idOf, listOption, PAGE_OPTIONS, pageQuery, stringOption } from "../args";
import { type Context, printJson, printPage } from "../context";
import { CliError, EXIT, UsageError } from "../errors";
import { age, table } from "../output";

/** Every scope of the API's spec: the compiler refuses this list when the spec gains or loses one. */
const EVERY_SCOPE = {
  "jobs:read": true,
  "jobs:write": true,
  "endpoints:read": true,
  "endpoints:write": true,
  "endpoints:invoke": true,
  "billing:read": true,
  admin: true,
} as const satisfies Record<Scope, true>;
export const SCOPES = Object.keys(EVERY_SCOPE) as readonly Scope[];
/**
 * What `keys create` grants when no `--scope` is given: run and read work, not manage the account;
 * only those the caller holds (the API refuses to grant more: `scope_not_allowed`).
 */
export const DEFAULT_SCOPES: Scope[] = [
  "jobs:read",
  "jobs:write",
  "endpoints:read",
  "endpoints:write",
  "endpoints:invoke",
];

export function parseScopes(raw: string[]): Scope[] {
  const scopes = raw
    .flatMap((s) => s.split(","))
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of scopes) {
    if (!(SCOPES as readonly string[]).includes(s))
      throw new UsageError(`--scope must be one of ${SCOPES.join(", ")}, not \`${s}\``);
  }
  return [...new Set(scopes as Scope[])];
}

/** The default scopes the caller holds (`held`: its scopes, as `GET /v1/me` gives them). */
export function defaultScopes(held: readonly Scope[]): Scope[] {
  const scopes = DEFAULT_SCOPES.filter((s) => held.includes(s));
  if (scopes.length === 0) {
    throw new CliError(
      `you hold none of the default scopes (${DEFAULT_SCOPES.join(", ")}); give the key some of yours with --scope: ${held.join(", ") || "none"}`,
    );
  }
  return scopes;
}

/** A key by its id, its prefix (`sk_…`, as `keys ls` shows it) or its name (one active key of yours). */
function keyIdOf(conn: Connection, ref: string): Promise<string> {
  const byPrefix = async (prefix: string) => {
    const query = { prefix, include_revoked: "true" as const, limit: 1 };
    return (await ok(conn, conn.api.GET("/v1/api-keys", { params: { query } }))).data[0];
  };
  if (ref.startsWith("sk_")) {
    return idOf(ref, byPrefix, `no key of yours has the prefix ${ref} (scalar keys ls lists them)`);
  }
  return idOf(ref, (name) => byName(conn, name), `no active key of yours is named ${ref} (scalar keys ls lists them)`);
}

/** Names are not unique: the one active key with this name, or a usage error naming the candidates. */
async function byName(conn: Connection, name: string): Promise<ApiKey | undefined> {
  const found: ApiKey[] = [];
  let cursor: string | undefined;
  do {
    const query = { limit: 100, ...(cursor ? { cursor } : {}) };
    const page = await ok(conn, conn.api.GET("/v1/api-keys", { params: { query } }));
    found.push(...page.data.filter((k) => k.name === name));
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  if (found.length > 1) {
    throw new UsageError(
      `${found.length} active keys are named ${name}; revoke one by its prefix: ${found.map((k) => k.prefix).join(", ")}`,
    );
  }
  return found[0];
}

function keysTable(keys: ApiKey[], now: number): string {
  return table(
    ["ID", "NAME", "PREFIX", "SCOPES", "CREATED", "LAST USED", "STATE"],
    keys.map((k) => [
      k.id,
      k.name,
      k.prefix,
      k.scopes.join(","),
      age(k.created_at, now),
      k.last_used_at ? age(k.last_used_at, now) : "never",
      k.revoked_at ? "revoked" : k.expires_at && Date.parse(k.expires_at) <= now ? "expired" : "active",
    ]),
  );
}

export const keysCreate: CommandSpec<Context> = {
  words: ["keys", "create"],
  summary: "create an API key; prints the secret once (on stdout, alone)",
  usage: "NAME [--scope S …] [--expires-at TIME]",
  positionals: { min: 1, max: 1 },
  options: {
    scope: {
      type: "string",
      multiple: true,
      value: "S",
      description: `${SCOPES.join(", ")} (repeat or comma list; default those of ${DEFAULT_SCOPES.join(",")} you hold)`,
    },
    "expires-at": { type: "string", value: "TIME", description: "expiry, an ISO 8601 time in the future" },
  },
  examples: [
    "scalar keys create ci-deploy --scope jobs:read,jobs:write",
    'export SCALAR_API_KEY="$(scalar keys create laptop)"',
  ],
  async run(ctx, { positionals, values }) {
    const expiresAt = stringOption(values, "expires-at");
    if (expiresAt !== undefined && Number.isNaN(Date.parse(expiresAt))) {
      throw new UsageError(`--expires-at takes an ISO 8601 time such as 2027-01-31T00:00:00Z, not \`${expiresAt}\``);
    }
    const asked = parseScopes(listOption(values, "scope"));
    const conn = ctx.connection();
    const scopes = asked.length > 0 ? asked : defaultScopes((await ok(conn, conn.api.GET("/v1/me"))).scopes);
    const key = await ok(
      conn,
      conn.api.POST("/v1/api-keys", {
        body: {
          name: positionals[0] as string,
          scopes,
          ...(expiresAt ? { expires_at: new Date(expiresAt).toISOString() } : {}),
        },
      }),
    );
    if (ctx.json) {
      printJson(ctx, key);
      return EXIT.ok;
    }
    ctx.io.stderr(
      `created key ${key.name} (${key.prefix}, id ${key.id}, scopes ${key.scopes.join(",")}); the secret is shown only now:\n`,
    );
    ctx.io.stdout(`${key.secret}\n`);
    return EXIT.ok;
  },
};

export const keysLs: CommandSpec<Context> = {
  words: ["keys", "ls"],
  summary: "list API keys (yours; an admin key or owner sees all of the account's)",
  usage: "[--all] [--limit N] [--cursor C]",
  positionals: { min: 0, max: 0 },
  options: {
    all: { type: "boolean", description: "include revoked keys" },
    ...PAGE_OPTIONS,
  },
  examples: ["scalar keys ls", "scalar keys ls --all --json"],
  async run(ctx, { values }) {
    const paging = pageQuery(values);
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/api-keys", {
        params: {
          query: {
            ...(values.all === true ? { include_revoked: "true" as const } : {}),
            ...paging,
          },
        },
      }),
    );
    printPage(ctx, page, { command: keysLs, values, none: "no keys", table: keysTable });
    return EXIT.ok;
  },
};

export const keysRevoke: CommandSpec<Context> = {
  words: ["keys", "revoke"],
  summary: "revoke an API key (it stops working within 10 s everywhere)",
  usage: "ID|PREFIX|NAME",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: [
    "scalar keys revoke sk_live_ab12cd34",
    "scalar keys revoke ci-deploy",
    "scalar keys revoke 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11",
  ],
  async run(ctx, { positionals }) {
    const conn = ctx.connection();
    const id = await keyIdOf(conn, positionals[0] as string);
    const key = await ok(conn, conn.api.DELETE("/v1/api-keys/{id}", { params: { path: { id } } }));
    if (ctx.json) printJson(ctx, key);
    else ctx.io.stdout(`key ${key.name} (${key.prefix}) revoked\n`);
    return EXIT.ok;
  },
};
