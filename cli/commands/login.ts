/** `scalar login` (verify a key, save it for later commands) and `scalar whoami`. */
import { connect, type Me, ok } from "../api/client";
import type { CommandSpec } from "../args";
import { type Context, printJson, USER_AGENT } from "../context";
import {
  findProjectCredentials,
  normaliseUrl,
  resolveCredentials,
  saveCredentials,
  userCredentialsFile,
} from "../credentials";
import { CliError, EXIT } from "../errors";
import { keyValues } from "../output";

export const DEFAULT_API_URL = "http://127.0.0.1:8787";

function describeMe(me: Me): string {
  const who = me.user ? `user ${me.user.email ?? me.user.id}` : me.api_key ? `key ${me.api_key.prefix}` : "unknown";
  const account = me.account ? `account ${me.account.name} (${me.account.id}, ${me.account.role})` : "no account";
  return `${who}, ${account}`;
}

export const login: CommandSpec<Context> = {
  words: ["login"],
  summary: "check an API key against the API and save it with the URL for later commands",
  usage: "[--api-url URL] [--api-key KEY]",
  positionals: { min: 0, max: 0 },
  options: {},
  examples: [
    "scalar login --api-url https://api.scalar.example --api-key sk_live_…",
    "scalar login            # asks for the key; the URL from SCALAR_API_URL, saved credentials, or 127.0.0.1:8787",
  ],
  async run(ctx) {
    const { io } = ctx;
    const found = resolveCredentials({ flags: ctx.flags, env: io.env, cwd: io.cwd, home: io.home });
    const apiUrl = normaliseUrl(ctx.flags.apiUrl ?? io.env.SCALAR_API_URL ?? found.apiUrl?.value ?? DEFAULT_API_URL);
    const apiKey = (
      ctx.flags.apiKey ??
      io.env.SCALAR_API_KEY ??
      (await io.readSecret(`API key for ${apiUrl}: `))
    ).trim();
    if (!apiKey) throw new CliError("no API key given: pass --api-key KEY (or type it when asked)");
    const conn = connect(apiUrl, apiKey, USER_AGENT);
    const me = await ok(conn, conn.api.GET("/v1/me"));
    const file = userCredentialsFile(io.env, io.home);
    await saveCredentials(file, { api_url: apiUrl, api_key: apiKey });
    const project = findProjectCredentials(io.cwd);
    if (ctx.json) {
      printJson(ctx, { api_url: apiUrl, credentials_file: file, me });
      return EXIT.ok;
    }
    io.stdout(`logged in to ${apiUrl} as ${describeMe(me)}\nsaved to ${file}\n`);
    if (project) io.stderr(`note: in this directory ${project} (from \`npm start\`) takes precedence over it\n`);
    return EXIT.ok;
  },
};

/** Month-to-date usage (needs `billing:read`) and the cap, in dollars; null when not readable. */
function spend(q: { month_to_date_cents: number | null; monthly_spend_cap_cents: number | null } | undefined) {
  if (!q || q.month_to_date_cents === null) return null;
  const dollars = (c: number) => `$${(c / 100).toFixed(2)}`;
  const cap = q.monthly_spend_cap_cents === null ? "no cap" : `cap ${dollars(q.monthly_spend_cap_cents)}`;
  return `${dollars(q.month_to_date_cents)} used (${cap}; a job's run counts once it ends)`;
}

/** The account's payment hold, or null: new jobs and endpoints are refused until the invoice is paid. */
export function holdLine(hold: NonNullable<Me["account"]>["billing"]["payment_hold"] | undefined): string | null {
  if (!hold) return null;
  // The amount and the payment page come only with billing:read (an owner's or admin's).
  const what =
    hold.amount_due_cents === null || hold.currency === null
      ? `invoice ${hold.month}`
      : `invoice ${hold.month} (${(hold.amount_due_cents / 100).toFixed(2)} ${hold.currency.toUpperCase()})`;
  const pay = hold.hosted_invoice_url
    ? `; pay at ${hold.hosted_invoice_url}`
    : hold.amount_due_cents === null
      ? "; an owner or admin can see and pay it"
      : "";
  return `since ${hold.since}: ${what} unpaid, no new jobs or endpoints${pay}`;
}

export const whoami: CommandSpec<Context> = {
  words: ["whoami"],
  summary: "which API, account and key the CLI uses, and where it found them",
  usage: "",
  positionals: { min: 0, max: 0 },
  options: {},
  examples: ["scalar whoami"],
  async run(ctx) {
    const creds = ctx.credentials();
    const conn = ctx.connection();
    const me = await ok(conn, conn.api.GET("/v1/me"));
    if (ctx.json) {
      printJson(ctx, { api_url: creds.apiUrl, from: { api_url: creds.from.apiUrl, api_key: creds.from.apiKey }, me });
      return EXIT.ok;
    }
    ctx.io.stdout(
      keyValues([
        ["api", `${creds.apiUrl} (from ${creds.from.apiUrl})`],
        ["credential", `${me.api_key ? `key ${me.api_key.prefix}` : "token"} (from ${creds.from.apiKey})`],
        ["account", me.account ? `${me.account.name} (${me.account.id})` : null],
        ["role", me.account?.role],
        ["scopes", me.scopes.join(", ")],
        ["fast tier", me.account ? (me.account.fast_tier_enabled ? "yes" : "no") : null],
        ["operator", operatorLine(me.account?.is_operator, me.scopes)],
        [
          "gpus in use",
          me.account ? `${me.account.quotas.gpus_in_use} of ${me.account.quotas.max_concurrent_gpus}` : null,
        ],
        ["this month", spend(me.account?.quotas)],
        ["payment hold", holdLine(me.account?.billing?.payment_hold)],
      ]),
    );
    return EXIT.ok;
  },
};

/** Operator commands need an operator account and the `admin` scope (an owner's or admin's, or an admin key). */
function operatorLine(isOperator: boolean | undefined, scopes: readonly string[]): string | null {
  if (!isOperator) return null;
  return scopes.includes("admin")
    ? "yes (nodes, dead-letters)"
    : "no: the account is an operator's, but this credential lacks the admin scope";
}
