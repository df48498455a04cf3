/** `scalar registries add | ls | rm`: the account's private registry credentials, which nodes pull with. */
import { type Connection, ok, type RegistryCredential } from "../api/client";
import { type CommandSpec, idOf, PAGE_OPTIONS, pageQuery, stringOption } from "../args";
import { type Context, printJson, printPage } from "../context";
import { CliError, EXIT, UsageError } from "../errors";
import { age, table } from "../output";

function registriesTable(rows: RegistryCredential[], now: number): string {
  return table(
    ["ID", "REGISTRY", "USERNAME", "CREATED", "UPDATED"],
    rows.map((r) => [r.id, r.registry, r.username, age(r.created_at, now), age(r.updated_at, now)]),
  );
}

/** The credentials an argument names: an id as it is, else the registry host's (as `registries ls` shows it). */
function credentialIdOf(conn: Connection, idOrRegistry: string): Promise<string> {
  const byRegistry = async (registry: string) => {
    const query = { registry, limit: 1 };
    return (await ok(conn, conn.api.GET("/v1/registry-credentials", { params: { query } }))).data[0];
  };
  return idOf(
    idOrRegistry,
    byRegistry,
    `this account has no credentials for ${idOrRegistry} (scalar registries ls lists them)`,
  );
}

export const registriesAdd: CommandSpec<Context> = {
  words: ["registries", "add"],
  summary: "set the credentials nodes pull this account's images from REGISTRY with (replaces earlier ones)",
  usage: "REGISTRY --username USER   (the password or token is read from stdin, or asked for)",
  positionals: { min: 1, max: 1 },
  options: {
    username: { type: "string", value: "USER", description: "the registry user name (required)" },
  },
  examples: [
    'echo "$GHCR_TOKEN" | scalar registries add ghcr.io --username ci-bot',
    "scalar registries add docker.io --username me        # asks for the password",
  ],
  async run(ctx, { positionals, values }) {
    const registry = positionals[0] as string;
    const username = stringOption(values, "username");
    if (!username) throw new UsageError("--username USER is required");
    if (/^[a-z]+:\/\//i.test(registry) || registry.includes("/")) {
      throw new UsageError(`REGISTRY is a host such as ghcr.io or registry.example.com:5000, not \`${registry}\``);
    }
    const password = (await ctx.io.readSecret(`password or token for ${username}@${registry}: `)).replace(/\r?\n$/, "");
    if (!password) throw new CliError("no password given: pipe it on stdin or type it when asked");
    const conn = ctx.connection();
    const saved = await ok(
      conn,
      conn.api.POST("/v1/registry-credentials", { body: { registry: registry.toLowerCase(), username, password } }),
    );
    if (ctx.json) printJson(ctx, saved);
    else {
      const replaced = saved.updated_at !== saved.created_at;
      ctx.io.stdout(
        `${replaced ? "replaced the" : "saved"} credentials for ${saved.registry} (user ${saved.username}); nodes use them from their next pull\n`,
      );
    }
    return EXIT.ok;
  },
};

export const registriesLs: CommandSpec<Context> = {
  words: ["registries", "ls"],
  summary: "list the registries this account has credentials for (never the passwords)",
  usage: "[--limit N] [--cursor C]",
  positionals: { min: 0, max: 0 },
  options: {
    ...PAGE_OPTIONS,
  },
  examples: ["scalar registries ls", "scalar registries ls --json"],
  async run(ctx, { values }) {
    const paging = pageQuery(values);
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/registry-credentials", {
        params: { query: paging },
      }),
    );
    printPage(ctx, page, { command: registriesLs, values, none: "no registry credentials", table: registriesTable });
    return EXIT.ok;
  },
};

export const registriesRm: CommandSpec<Context> = {
  words: ["registries", "rm"],
  summary: "remove a registry's credentials (later pulls from it are anonymous)",
  usage: "ID|REGISTRY",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: ["scalar registries rm ghcr.io"],
  async run(ctx, { positionals }) {
    const conn = ctx.connection();
    const id = await credentialIdOf(conn, (positionals[0] as string).toLowerCase());
    const removed = await ok(conn, conn.api.DELETE("/v1/registry-credentials/{id}", { params: { path: { id } } }));
    if (ctx.json) printJson(ctx, removed);
    else ctx.io.stdout(`removed the credentials for ${removed.registry} (user ${removed.username})\n`);
    return EXIT.ok;
  },
};
