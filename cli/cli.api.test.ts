/**
 * The CLI against the real API: a test database, the local token issuer and `wrangler dev` on free
 * ports, started once; every command runs as a child process (`node cli/bin/scalar.mjs …`) with its
 * own home and config folders. Jobs stay queued, except in the last part: with a Docker engine and
 * the local registry, a real `scalar-agent` (declared GPUs) runs them, so `jobs run` prints the
 * container's output and exits with its exit code.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { DockerodeEngine } from "../node-agent/docker/dockerode-engine";
import { AUTH_PASSWORD, AUTH_USER, pushPrivateImage, startAuthRegistry } from "../node-agent/test/auth-registry";
import { AgentProcess, gpuEngineSocket, removeLabelled, testImage } from "../node-agent/test/harness";
import { freePort, refusedPort } from "../tools/db/embedded";
import { startWranglerDev, type WranglerDev } from "../tools/launcher/wrangler";
import { createTestDatabase, type TestDatabase } from "../tools/test/database";
import { has } from "../tools/test/parts";
import { createDevSession } from "../tools/token-issuer/dev-session";
import { startTokenIssuer, type TokenIssuerServer } from "../tools/token-issuer/server";
import { newKeyEntry } from "../workers/auth/env-secrets";
import { EXIT } from "./errors";

const BIN = resolve(import.meta.dirname, "bin/scalar.mjs");
/** A command line without quoting: split at spaces. */
const words = (line: string) => line.split(" ");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Collects a child's output as it comes, to wait for a line before acting. */
function collect(stream: NodeJS.ReadableStream | null | undefined) {
  let text = "";
  stream?.on("data", (chunk) => {
    text += String(chunk);
  });
  return {
    async until(pattern: RegExp): Promise<RegExpExecArray> {
      const giveUp = Date.now() + 30_000;
      for (;;) {
        const match = pattern.exec(text);
        if (match) return match;
        if (Date.now() > giveUp) throw new Error(`gave up waiting for ${pattern} in: ${text}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

// Each step is a new process (tsx start-up: half a second, several on a busy machine): generous time per test.
// Skipped only outside CI when the test Postgres is missing (`npm test` reports which); with CI=true `has()` is true, so a
// missing part fails the test instead (tools/test/parts.ts).
describe.skipIf(!has("postgres"))("scalar CLI against the real API", { timeout: 180_000 }, () => {
  let db: TestDatabase;
  let issuer: TokenIssuerServer;
  let wrangler: WranglerDev;
  let apiUrl: string;
  let apiKey: string;
  let accountId: string;
  let dir: string;
  let home: string;
  let xdg: string;
  let work: string;

  /** Runs the CLI in `work` (no .scalar above it) with a fresh home; `env` adds variables. */
  function scalar(
    args: string[],
    opts: { env?: Record<string, string>; cwd?: string } = {},
  ): Promise<Result> & {
    child: ReturnType<typeof execFile>;
  } {
    let child!: ReturnType<typeof execFile>;
    const done = new Promise<Result>((resolveResult) => {
      child = execFile(
        process.execPath,
        [BIN, ...args],
        {
          cwd: opts.cwd ?? work,
          env: { PATH: process.env.PATH ?? "", HOME: home, XDG_CONFIG_HOME: xdg, ...opts.env },
          timeout: 60_000,
        },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
          resolveResult({ code, stdout: String(stdout), stderr: String(stderr) });
        },
      );
    });
    return Object.assign(done, { child });
  }
  const authed = (args: string[]) => scalar(args, { env: { SCALAR_API_URL: apiUrl, SCALAR_API_KEY: apiKey } });
  const oneErrorLine = (r: Result) => {
    expect(r.stdout).toBe("");
    expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(r.stderr.startsWith("error: ")).toBe(true);
    return r.stderr.trimEnd();
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "scalar-cli-api-"));
    home = join(dir, "home");
    xdg = join(dir, "xdg");
    work = join(dir, "work");
    for (const d of [home, xdg, work]) mkdirSync(d, { recursive: true });
    db = await createTestDatabase();
    issuer = await startTokenIssuer({ port: 0 });
    wrangler = await startWranglerDev({
      port: await freePort(),
      inspectorPort: await freePort(),
      databaseUrl: db.url,
      vars: {
        SUPABASE_URL: issuer.url,
        LOG_LEVEL: "warn",
        ENV_SECRETS_KEYS: newKeyEntry("cli-test"),
        INGRESS_SECRET: "cli-test-ingress-secret-0123456789",
      },
      stateDir: join(dir, "wrangler"),
      timeoutMs: 150_000,
    });
    apiUrl = wrangler.url;
    const session = await createDevSession({ apiUrl, databaseUrl: db.url, issuer });
    apiKey = session.apiKey;
    accountId = session.accountId;
  }, 180_000);

  afterAll(async () => {
    await wrangler?.process.stop();
    await issuer?.close();
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("without credentials, says in one line to run npm start or scalar login", async () => {
    const r = await scalar(["jobs", "ls"]);
    expect(r.code).toBe(EXIT.error);
    expect(oneErrorLine(r)).toContain("run `npm start`");
    expect(r.stderr).toContain("scalar login");
  });

  it("login checks the key, then saves it (0600) where later commands find it", async () => {
    const bad = await scalar(["login", "--api-url", apiUrl, "--api-key", "sk_test_nope"]);
    expect(bad.code).toBe(EXIT.error);
    expect(oneErrorLine(bad)).toMatch(/^error: invalid_api_key: /);
    const file = join(xdg, "scalar/credentials.json");
    expect(() => statSync(file)).toThrow();

    // The key from standard input (what a prompt reads), one line.
    const piped = scalar(["login", "--api-url", apiUrl]);
    piped.child.stdin?.end(`${apiKey}\n`);
    expect((await piped).code).toBe(0);
    expect(JSON.parse(readFileSync(file, "utf8")).api_key).toBe(apiKey);

    const r = await scalar(["login", "--api-url", `${apiUrl}/`, "--api-key", apiKey]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`logged in to ${apiUrl} as key sk_test_`);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ api_url: apiUrl, api_key: apiKey });
    expect(statSync(file).mode & 0o777).toBe(0o600);

    const who = await scalar(["whoami", "--json"]);
    expect(who.code).toBe(0);
    const me = JSON.parse(who.stdout);
    expect(me.from).toEqual({ api_url: file, api_key: file });
    expect(me.me.account.role).toBe("owner");
    // The development user owns an operator account, and its key may read billing.
    const text = (await scalar(["whoami"])).stdout;
    expect(text).toMatch(/^operator\s+yes \(nodes, dead-letters\)$/m);
    expect(text).toMatch(/^this month\s+\$\d+\.\d\d used \(no cap; a job's run counts once it ends\)$/m);
  });

  it("prefers the nearest .scalar/credentials.json (npm start's) over the login file, and flags over both", async () => {
    const project = join(dir, "clone");
    mkdirSync(join(project, ".scalar"), { recursive: true });
    mkdirSync(join(project, "sub/dir"), { recursive: true });
    writeFileSync(
      join(project, ".scalar/credentials.json"),
      JSON.stringify({ api_url: apiUrl, api_key: "sk_test_stale" }),
    );
    const r = await scalar(["whoami"], { cwd: join(project, "sub/dir") });
    expect(r.code).toBe(EXIT.error);
    expect(oneErrorLine(r)).toMatch(/^error: invalid_api_key: /);
    const flagged = await scalar(["whoami", "--api-key", apiKey], { cwd: join(project, "sub/dir") });
    expect(flagged.code).toBe(0);
    expect(flagged.stdout).toContain("(from --api-key)");
  });

  it("names the URL it could not reach", async () => {
    const port = await refusedPort();
    const r = await scalar(["regions", "--api-url", `http://127.0.0.1:${port}`, "--api-key", apiKey]);
    expect(r.code).toBe(EXIT.error);
    expect(oneErrorLine(r)).toBe(
      `error: could not reach the Scalar API at http://127.0.0.1:${port} (ECONNREFUSED); is \`npm start\` running?`,
    );
  });

  it("usage errors exit 2 before any request", async () => {
    const r = await authed(words("jobs run --image busybox"));
    expect(r.code).toBe(EXIT.usage);
    expect(oneErrorLine(r)).toBe("error: --gpus is required");
    const unknown = await authed(words("jobs ls --colour"));
    expect(unknown.code).toBe(EXIT.usage);
  });

  it("regions: a table, and JSON that parses", async () => {
    const r = await authed(words("regions"));
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toMatch(/^REGION\s+AVAILABLE\s+GPU\s+TOTAL\s+FREE\s+HELD\s+BUSY\s+QUEUED JOBS$/);
    expect(r.stdout).toContain("us-west-1");
    const j = await authed(words("regions --json"));
    expect(JSON.parse(j.stdout).data.map((x: { region: string }) => x.region)).toEqual(["us-west-1"]);
    expect(j.stderr).toBe("");
  });

  it("a 4xx from the API is one line with its code and field, exit 1", async () => {
    const r = await authed(words("jobs run --detach --gpus 65 --image busybox"));
    expect(r.code).toBe(EXIT.error);
    expect(oneErrorLine(r)).toMatch(/^error: invalid_request: invalid body: gpu_count: /);
    const missing = await authed(words("jobs get 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11"));
    expect(missing.code).toBe(EXIT.error);
    expect(oneErrorLine(missing)).toMatch(/^error: not_found: /);
    const json = await authed(words("jobs get not-a-uuid --json"));
    expect(oneErrorLine(json)).toMatch(/^error: invalid_request: .*id/);
  });

  it("jobs run --detach, ls (with pages), get, logs, cancel", async () => {
    const first = await authed(words("jobs run --detach --gpus 1 --image busybox:1 --label cli=test -- echo hi"));
    expect(first.code).toBe(0);
    const id = first.stdout.trim();
    expect(id).toMatch(UUID);
    expect(first.stderr).toContain(`scalar jobs logs ${id} -f`);

    const second = await authed(
      words("jobs run --detach --json --gpus 1 --image busybox:1 --tier fast --max-runtime 5m -- true"),
    );
    expect(second.code).toBe(0);
    const job2 = JSON.parse(second.stdout);
    expect(job2).toMatchObject({ tier: "fast", gpu_count: 1, max_runtime_s: 300, command: ["true"] });
    // An estimate past the max runtime is the API's to refuse, in one line with its code.
    const overlong = await authed(
      words("jobs run --detach --gpus 1 --image busybox:1 --max-runtime 5m --estimate 10m"),
    );
    expect(overlong.code).toBe(EXIT.error);
    expect(oneErrorLine(overlong)).toMatch(
      /^error: invalid_request: estimated_duration_s: must not exceed max_runtime_s/,
    );
    expect(["queued", "placed"]).toContain(job2.status);

    const ls = await authed(words("jobs ls"));
    expect(ls.code).toBe(0);
    expect(ls.stdout.split("\n")[0]).toMatch(/^ID\s+STATUS\s+TIER\s+GPUS\s+REGION\s+AGE\s+IMAGE$/);
    expect(ls.stdout).toContain(id);
    expect(ls.stdout).toContain(job2.id);

    const page1 = await authed(words("jobs ls --limit 1 --json"));
    const p1 = JSON.parse(page1.stdout);
    expect(p1.data.map((j: { id: string }) => j.id)).toEqual([job2.id]);
    expect(p1.next_cursor).toEqual(expect.any(String));
    // The next page's command keeps the filters: run as printed, it lists the rest of the same query.
    const human = await authed(words("jobs ls --status queued,placed --limit 1"));
    const more = /more: scalar (jobs ls .*)$/m.exec(human.stderr)?.[1];
    expect(more).toBe(`jobs ls --status queued,placed --limit 1 --cursor ${p1.next_cursor}`);
    const next = await authed([...words(more!), "--json"]);
    expect(JSON.parse(next.stdout).data.map((j: { id: string }) => j.id)).toEqual([id]);
    const page2 = await authed(["jobs", "ls", "--limit", "1", "--cursor", p1.next_cursor, "--json"]);
    expect(JSON.parse(page2.stdout).data[0].id).toBe(id);
    const labelled = await authed(words("jobs ls --label cli=test --status queued,placed --json"));
    expect(JSON.parse(labelled.stdout).data.map((j: { id: string }) => j.id)).toEqual([id]);

    const get = await authed(["jobs", "get", id]);
    expect(get.code).toBe(0);
    expect(get.stdout).toMatch(/^id\s+/);
    expect(get.stdout).toMatch(/status\s+queued/);
    expect(get.stdout).toMatch(/command\s+echo hi/);
    expect(JSON.parse((await authed(["jobs", "get", id, "--json"])).stdout).labels).toEqual({ cli: "test" });

    const logs = await authed(["jobs", "logs", id]);
    expect(logs).toEqual({ code: 0, stdout: "", stderr: "" });

    for (const jobId of [id, job2.id]) {
      const cancel = await authed(["jobs", "cancel", jobId]);
      expect(cancel.code).toBe(0);
      expect(cancel.stdout).toBe(`job ${jobId} cancelled\n`);
    }
    const again = await authed(["jobs", "cancel", id, "--json"]);
    expect(JSON.parse(again.stdout).status).toBe("cancelled");

    // Following a finished job's logs ends at once with how it ended.
    const follow = await authed(["jobs", "logs", id, "-f"]);
    expect(follow).toEqual({ code: 0, stdout: "", stderr: `job ${id} was cancelled\n` });

    // With the account's log streams all taken (elsewhere), following waits for a place, and says so.
    await db.sql`insert into log_tails (id, account_id)
                 select gen_random_uuid(), ${accountId} from generate_series(1, 50)`;
    const waiting = authed(["jobs", "logs", id, "-f"]);
    await new Promise((r) => setTimeout(r, 2_000));
    // Those streams' isolates died: their places come free.
    await db.sql`update log_tails set seen_at = now() - interval '1 minute' where account_id = ${accountId}`;
    const waited = await waiting;
    expect(waited.code).toBe(0);
    expect(waited.stderr).toMatch(/already follows 50 log streams.*; waiting for a free log stream\n/);
    expect(waited.stderr.endsWith(`job ${id} was cancelled\n`)).toBe(true);
  }, 60_000);

  it("jobs run --idempotency-key: the same key and body give the same job; another body is refused", async () => {
    const line = "jobs run --detach --idempotency-key cli-test-key-1 --gpus 1 --image busybox:1 -- true";
    const first = await authed(words(line));
    const again = await authed(words(line));
    expect(first.code).toBe(0);
    expect(again.stdout).toBe(first.stdout);
    const other = await authed(words(line.replace("-- true", "-- false")));
    expect(other.code).toBe(EXIT.error);
    expect(oneErrorLine(other)).toMatch(/^error: idempotency_key_reused: /);
    expect((await authed(words(`jobs cancel ${first.stdout.trim()}`))).code).toBe(0);
  });

  it("jobs run shows the wait and exits 121 when the job is cancelled meanwhile", async () => {
    const run = authed(words("jobs run --gpus 1 --image busybox:1 -- sleep 600"));
    const stderr = collect(run.child.stderr);
    const id = (await stderr.until(/job ([0-9a-f-]{36}) submitted/))[1] as string;
    await stderr.until(/\] queued/);
    expect((await authed(["jobs", "cancel", id])).code).toBe(0);
    const r = await run;
    expect(r.code).toBe(EXIT.jobCancelled);
    expect(r.stdout).toBe("");
    // No --tier: the API picks Fast for this account (entitled to it), and the CLI says so.
    expect(r.stderr).toContain(`job ${id} submitted (fast, 1 GPU, us-west-1)`);
    expect(r.stderr).toMatch(/\[\d+\.\ds\] queued/);
    expect(r.stderr.trimEnd().split("\n").at(-1)).toBe(`job ${id} was cancelled`);
  });

  it("Ctrl-C stops watching, not the job: exit 130 and how to follow or cancel it", async () => {
    const run = authed(words("jobs run --gpus 1 --image busybox:1 -- sleep 600"));
    const stderr = collect(run.child.stderr);
    const id = (await stderr.until(/job ([0-9a-f-]{36}) submitted/))[1] as string;
    await stderr.until(/\] queued/);
    run.child.kill("SIGINT");
    const r = await run;
    expect(r.code).toBe(EXIT.interrupted);
    expect(r.stderr).toContain(`job ${id} keeps running`);
    expect(r.stderr).toContain(`scalar jobs cancel ${id}`);
    expect(JSON.parse((await authed(words(`jobs get ${id} --json`))).stdout).status).toBe("queued");
    expect((await authed(words(`jobs cancel ${id}`))).code).toBe(0);
  });

  it("when watching fails (here: its key is revoked), one line says the job was submitted and is not cancelled", async () => {
    const created = JSON.parse(
      (await authed(words("keys create cli-watch --scope jobs:read,jobs:write --json"))).stdout,
    );
    const run = scalar(words("jobs run --gpus 1 --image busybox:1 -- sleep 600"), {
      env: { SCALAR_API_URL: apiUrl, SCALAR_API_KEY: created.secret },
    });
    const stderr = collect(run.child.stderr);
    const id = (await stderr.until(/job ([0-9a-f-]{36}) submitted/))[1] as string;
    await stderr.until(/\] queued/);
    expect((await authed(words(`keys revoke ${created.id}`))).code).toBe(0);
    const r = await run;
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr.trimEnd().split("\n").at(-1)).toMatch(
      new RegExp(
        `^error: invalid_api_key: .*; job ${id} was submitted and is not cancelled \\(follow it: scalar jobs logs ${id} -f\\)$`,
      ),
    );
    expect((await authed(words(`jobs cancel ${id}`))).code).toBe(0);
  });

  it("jobs run --json: status records and the final job, one JSON object per line", async () => {
    const run = authed(words("jobs run --json --gpus 1 --image busybox:1 -- sleep 600"));
    const stdout = collect(run.child.stdout);
    const id = (await collect(run.child.stderr).until(/job ([0-9a-f-]{36}) submitted/))[1] as string;
    const line = (await stdout.until(/^.*"type":"status".*\n/m))[0];
    expect(JSON.parse(line)).toMatchObject({ type: "status", status: "queued", stage: "queued" });
    await authed(["jobs", "cancel", id]);
    const r = await run;
    expect(r.code).toBe(EXIT.jobCancelled);
    const records = r.stdout
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(records.at(-1)).toMatchObject({ type: "end", job: { id, status: "cancelled" } });
  });

  it("keys create (the secret alone on stdout), ls, scopes enforced, revoke", async () => {
    const created = await authed(words("keys create cli-readonly --scope jobs:read"));
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^sk_test_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}$/);
    expect(created.stderr).toContain("cli-readonly");

    const ls = await authed(words("keys ls"));
    expect(ls.stdout.split("\n")[0]).toMatch(/^ID\s+NAME\s+PREFIX\s+SCOPES\s+CREATED\s+LAST USED\s+STATE$/);
    const row = ls.stdout.split("\n").find((l) => l.includes("cli-readonly")) ?? "";
    expect(row).toMatch(/jobs:read\s+\S+\s+never\s+active$/);
    const keys = JSON.parse((await authed(words("keys ls --json"))).stdout).data as { id: string; name: string }[];
    const keyId = keys.find((k) => k.name === "cli-readonly")?.id as string;

    const withKey = (args: string[]) => scalar(args, { env: { SCALAR_API_URL: apiUrl, SCALAR_API_KEY: secret } });
    expect((await withKey(["jobs", "ls"])).code).toBe(0);
    const refused = await withKey(["jobs", "run", "--detach", "--gpus", "1", "--image", "busybox"]);
    expect(refused.code).toBe(EXIT.error);
    expect(oneErrorLine(refused)).toMatch(/^error: missing_scope: /);

    // By the prefix keys ls shows, as well as by id; a prefix of no key of yours is one line.
    const prefix = secret.split("_").slice(0, 3).join("_");
    expect(oneErrorLine(await authed(words("keys revoke sk_test_nosuchkey")))).toMatch(/^error: not_found: /);
    const revoked = await authed(["keys", "revoke", prefix]);
    expect(revoked).toMatchObject({ code: 0, stdout: `key cli-readonly (${prefix}) revoked\n` });
    expect(JSON.parse((await authed(["keys", "revoke", keyId, "--json"])).stdout).revoked_at).toEqual(
      expect.any(String),
    );
    const after = await withKey(["jobs", "ls"]);
    expect(after.code).toBe(EXIT.error);
    expect(oneErrorLine(after)).toMatch(/^error: invalid_api_key: /);
    const all = JSON.parse((await authed(words("keys ls --all --json"))).stdout).data as {
      id: string;
      revoked_at: string | null;
    }[];
    expect(all.find((k) => k.id === keyId)?.revoked_at).toEqual(expect.any(String));

    // By name: one active key of that name is revoked; two are a usage error naming their prefixes.
    const twins = [];
    for (let i = 0; i < 2; i++) twins.push((await authed(words("keys create cli-twin"))).stdout.trim());
    const ambiguous = await authed(words("keys revoke cli-twin"));
    expect(ambiguous.code).toBe(EXIT.usage);
    expect(ambiguous.stderr).toMatch(/^error: 2 active keys are named cli-twin; revoke one by its prefix: sk_test_/);
    const first = twins[0]!.split("_").slice(0, 3).join("_");
    expect((await authed(["keys", "revoke", first])).code).toBe(0);
    const second = twins[1]!.split("_").slice(0, 3).join("_");
    expect(await authed(words("keys revoke cli-twin"))).toMatchObject({
      code: 0,
      stdout: `key cli-twin (${second}) revoked\n`,
    });
    expect(oneErrorLine(await authed(words("keys revoke cli-twin")))).toMatch(
      /^error: not_found: no active key of yours is named cli-twin/,
    );
  });

  it("usage: this month's lines and total as a table, a past month by --month, --json", async () => {
    // 90 minutes of 2 Flex H100 GPUs that ended this month (as the outbox writes a run's usage).
    await db.sql`
      insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
      values (${accountId}, ${`run-${crypto.randomUUID()}`}, 'flex', 'H100', 2, 10800,
              greatest(now() - interval '90 minutes', date_trunc('month', now() at time zone 'UTC') at time zone 'UTC'), now())`;
    const month = new Date().toISOString().slice(0, 7);
    const table = await authed(words("usage"));
    expect(table.code).toBe(0);
    expect(table.stdout.split("\n")[0]).toMatch(/^TIER\s+GPU\s+STATE\s+GPU-HOURS\s+PER GPU-HOUR\s+AMOUNT$/);
    expect(table.stdout).toMatch(/flex\s+H100\s+ended\s+3\.00\s+\$1\.79\s+\$5\.37/);
    expect(table.stdout).toContain(`${month}: $5.37 for 3.00 GPU-hours\n`);
    const json = JSON.parse((await authed(words(`usage --month ${month} --json`))).stdout);
    expect(json).toMatchObject({ month, total_cents: 537, total_gpu_seconds: 10800 });
    expect((await authed(words("usage --month 2026-13"))).code).toBe(EXIT.usage);
    expect(oneErrorLine(await authed(words("usage --month 2999-01")))).toMatch(/^error: invalid_request: month: /);
  });

  it("invoices ls: the account's invoices as a table and JSON", async () => {
    expect((await authed(words("invoices ls"))).stderr).toBe("no invoices yet\n");
    await db.sql`
      insert into invoices (account_id, period_start, period_end, status, total_cents, subtotal_cents, number, lines)
      values (${accountId}, '2026-10-01T00:00:00Z', '2026-11-01T00:00:00Z', 'open', 1241, 1241, 'SIM-0042',
              ${db.sql.json([{ tier: "flex", gpu_model: "H100", gpu_seconds: 24_960, cents_per_gpu_hour: 179, amount_cents: 1241 }])})`;
    const ls = await authed(words("invoices ls"));
    expect(ls.code).toBe(0);
    expect(ls.stdout.split("\n")[0]).toMatch(/^ID\s+MONTH\s+STATUS\s+TOTAL\s+NUMBER\s+PAY AT$/);
    expect(ls.stdout).toMatch(/2026-10\s+open\s+\$12\.41\s+SIM-0042\s+-/);
    const json = JSON.parse((await authed(words("invoices ls --json"))).stdout);
    expect(json.data[0]).toMatchObject({ month: "2026-10", total_cents: 1241, lines: [{ amount_cents: 1241 }] });

    const id = json.data[0].id as string;
    await db.sql`update invoices set payment_attempts = 2, payment_error = 'Your card was declined.',
                   hosted_invoice_url = 'https://invoice.stripe.test/i/42' where id = ${id}`;
    const got = await authed(words(`invoices get ${id}`));
    expect(got.code).toBe(0);
    expect(got.stdout).toMatch(
      new RegExp(`^id +${id}\nmonth +2026-10\nstatus +open\nnumber +SIM-0042\ntotal +\\$12\\.41 USD\n`),
    );
    expect(got.stdout).toMatch(/^attempts +2 \(last: Your card was declined\.\)$/m);
    expect(got.stdout).toMatch(/^pay at +https:\/\/invoice\.stripe\.test\/i\/42$/m);
    expect(got.stdout).toMatch(/^TIER +GPU +GPU-HOURS +PER GPU-HOUR +AMOUNT\nflex +H100 +6\.93 +\$1\.79 +\$12\.41\n$/m);
    expect(JSON.parse((await authed(words(`invoices get ${id} --json`))).stdout)).toMatchObject({
      id,
      payment_attempts: 2,
    });
    expect(oneErrorLine(await authed(words("invoices get 00000000-0000-4000-8000-000000000000")))).toMatch(
      /^error: not_found: /,
    );
  });

  it("registries add (the password from stdin, never echoed), ls, rm by registry", async () => {
    const adding = authed(words("registries add GHCR.io --username ci-bot"));
    adding.child.stdin?.end("ghp_cli_secret_token\n");
    const added = await adding;
    expect(added).toMatchObject({
      code: 0,
      stdout: "saved credentials for ghcr.io (user ci-bot); nodes use them from their next pull\n",
    });
    const again = authed(words("registries add ghcr.io --username ci-bot-2 --json"));
    again.child.stdin?.end("ghp_other_token\n");
    const replaced = JSON.parse((await again).stdout);
    expect(replaced).toMatchObject({ registry: "ghcr.io", username: "ci-bot-2" });
    expect(JSON.stringify(replaced)).not.toContain("ghp_");

    const ls = await authed(words("registries ls"));
    expect(ls.stdout.split("\n")[0]).toMatch(/^ID\s+REGISTRY\s+USERNAME\s+CREATED\s+UPDATED$/);
    expect(ls.stdout).toMatch(/ghcr\.io\s+ci-bot-2\s/);
    expect(ls.stdout).not.toContain("ghp_");

    const empty = authed(words("registries add docker.io --username me"));
    empty.child.stdin?.end("");
    expect(oneErrorLine(await empty)).toMatch(/no password given/);
    expect((await authed(words("registries add https://ghcr.io --username me"))).code).toBe(EXIT.usage);
    expect(oneErrorLine(await authed(words("registries rm quay.io")))).toMatch(/^error: not_found: .*quay\.io/);

    expect(await authed(words("registries rm ghcr.io"))).toMatchObject({
      code: 0,
      stdout: "removed the credentials for ghcr.io (user ci-bot-2)\n",
    });
    expect(JSON.parse((await authed(words("registries ls --json"))).stdout).data).toEqual([]);
  });

  it("endpoints create, ls, get, update, rm", async () => {
    const created = await authed(
      words("endpoints create cli-serve --gpus 1 --image busybox:1 --min-replicas 0 --port 8080 -- httpd -f"),
    );
    expect(created.code).toBe(0);
    const id = created.stdout.trim();
    expect(id).toMatch(UUID);
    const dup = await authed(words("endpoints create cli-serve --gpus 1 --image busybox:1 --min-replicas 0"));
    expect(dup.code).toBe(EXIT.error);
    expect(oneErrorLine(dup)).toMatch(/^error: name_taken: /);

    const ls = await authed(words("endpoints ls"));
    expect(ls.stdout).toMatch(new RegExp(`${id}\\s+cli-serve\\s+active\\s+fast\\s+1\\s+0–1`));
    const get = JSON.parse((await authed(["endpoints", "get", id, "--json"])).stdout);
    expect(get).toMatchObject({ name: "cli-serve", port: 8080, command: ["httpd", "-f"], min_replicas: 0 });
    // By name too: the account's active endpoint of that name.
    expect(JSON.parse((await authed(words("endpoints get cli-serve --json"))).stdout).id).toBe(id);
    const unknown = await authed(words("endpoints get no-such-serve"));
    expect(unknown.code).toBe(EXIT.error);
    expect(oneErrorLine(unknown)).toMatch(/^error: not_found: no active endpoint is named no-such-serve/);
    // Update changes only what it names.
    const updated = await authed(
      words("endpoints update cli-serve --max-replicas 3 --health-path /ready --startup-timeout 1800"),
    );
    expect(updated.code, updated.stderr).toBe(0);
    expect(updated.stdout).toMatch(new RegExp(`^endpoint cli-serve \\(${id}\\) updated`));
    expect(JSON.parse((await authed(["endpoints", "get", id, "--json"])).stdout)).toMatchObject({
      max_replicas: 3,
      health_path: "/ready",
      startup_timeout_s: 1800,
      port: 8080,
      command: ["httpd", "-f"],
      min_replicas: 0,
    });
    expect((await authed(words("endpoints get cli-serve"))).stdout).toMatch(
      /^health\s+GET \/ready; ready within 1800 s of starting$/m,
    );
    expect(oneErrorLine(await authed(words("endpoints update cli-serve --startup-timeout 5")))).toMatch(
      /^error: .*startup-timeout/,
    );
    expect(oneErrorLine(await authed(words("endpoints update cli-serve")))).toMatch(/^error: nothing to change/);
    expect(oneErrorLine(await authed(words("endpoints update cli-serve --region eu-1")))).toMatch(
      /^error: an endpoint's region cannot change/,
    );
    const rm = await authed(words("endpoints rm cli-serve"));
    expect(rm).toMatchObject({ code: 0, stdout: `endpoint cli-serve (${id}) deleted\n` });
    // Deleted: the name no longer finds it, and the id says it is gone.
    expect(oneErrorLine(await authed(words("endpoints rm cli-serve")))).toMatch(/^error: not_found: /);
    expect((await authed(words("endpoints ls --json"))).stdout).not.toContain(id);
    expect(JSON.parse((await authed(words("endpoints ls --status all --json"))).stdout).data[0].id).toBe(id);
  });
  // Needs a Docker engine and the local registry: skipped outside CI without them, fails in CI (tools/test/parts.ts).
  describe.skipIf(!has("docker") || !has("registry"))("with a node agent on the local Docker engine", () => {
    let agent: AgentProcess;
    let engine: DockerodeEngine;
    const agentName = `cli-test-${process.pid}`;
    const small = "--cpu 0.5 --memory 256Mi --max-attempts 1";

    beforeAll(async () => {
      const res = await fetch(`${apiUrl}/v1/operator/nodes`, {
        method: "POST",
        headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({
          region: "us-west-1",
          gpu_model: "H100",
          gpu_count: 8,
          cpu_milli: 16000,
          memory_mib: 65536,
        }),
      });
      const created = (await res.json()) as { token: string };
      expect(res.status).toBe(201);
      engine = new DockerodeEngine({ socketPath: gpuEngineSocket() });
      // With an ingress on loopback, as the local stack's agents have: endpoints take traffic.
      const ingressPort = await freePort();
      agent = new AgentProcess(
        {
          apiUrl,
          token: created.token,
          socket: gpuEngineSocket(),
          dataDir: mkdtempSync(join(dir, "agent-")),
          agentName,
        },
        [
          ...["--ingress-host", "127.0.0.1", "--ingress-port", String(ingressPort)],
          ...["--ingress-url", `http://127.0.0.1:${ingressPort}`],
        ],
      );
      agent.start();
    }, 60_000);

    afterAll(async () => {
      await agent?.kill();
      if (engine) await removeLabelled(engine, agentName);
    });

    it("jobs run prints the container's output and exits 0; jobs logs reads it again", async () => {
      const r = await authed(words(`jobs run --gpus 1 --image ${testImage()} ${small} -- echo hello`));
      expect(r.stdout, `${r.stderr}\n${agent.log().slice(-2000)}`).toBe("hello\n");
      expect(r.code).toBe(0);
      const id = /job ([0-9a-f-]{36}) submitted/.exec(r.stderr)?.[1] as string;
      expect(r.stderr.trimEnd().split("\n").at(-1)).toMatch(new RegExp(`^job ${id} succeeded after `));
      expect(await authed(words(`jobs logs ${id}`))).toEqual({ code: 0, stdout: "hello\n", stderr: "" });
      const json = await authed(words(`jobs logs ${id} --json`));
      expect(JSON.parse(json.stdout)).toMatchObject({ stream: "stdout", line: "hello", attempt: 1 });
    });

    it("a private image runs once `registries add` gives the account credentials, and is refused again after `rm`", async () => {
      const registry = await startAuthRegistry();
      let image: string | undefined;
      try {
        image = await pushPrivateImage(engine, registry, testImage());
        const run = () => authed(words(`jobs run --gpus 1 --image ${image} ${small} -- echo private-hello`));
        const needs = new RegExp(
          `needs registry credentials .*scalar registries add ${registry.host.replace(/\./g, "\\.")}`,
        );
        const before = await run();
        expect(before.stdout).toBe("");
        expect(before.code).toBe(EXIT.jobDeadLettered);
        expect(before.stderr).toMatch(needs);

        const adding = authed(words(`registries add ${registry.host} --username ${AUTH_USER}`));
        adding.child.stdin?.end(`${AUTH_PASSWORD}\n`);
        expect((await adding).code).toBe(0);
        const ran = await run();
        expect(ran.stdout, `${ran.stderr}\n${agent.log().slice(-2000)}`).toBe("private-hello\n");
        expect(ran.code).toBe(0);

        // The node still has the image, but pulls again for an account without credentials: refused.
        expect((await authed(words(`registries rm ${registry.host}`))).code).toBe(0);
        const after = await run();
        expect(after.code).toBe(EXIT.jobDeadLettered);
        expect(after.stderr).toMatch(needs);
        expect(agent.log()).not.toContain(AUTH_PASSWORD);
      } finally {
        await registry.stop();
        if (image)
          await engine.docker
            .getImage(image)
            .remove({ force: true })
            .catch(() => {});
      }
    });

    it("endpoints invoke: the first request starts a replica from zero; then the replica's own answers; an invoke-only key", async () => {
      const created = await authed([
        ...words(
          `endpoints create web --gpus 1 --image ${testImage()} --cpu 0.5 --memory 256Mi --min-replicas 0 --max-replicas 2 --port 8080 --health-path /ok --`,
        ),
        "sh",
        "-c",
        "mkdir -p /www && echo ok > /www/ok && exec httpd -f -p 8080 -h /www",
      ]);
      expect(created.code, created.stderr).toBe(0);
      const cold = await authed(words("endpoints invoke web /ok --wait 60"));
      expect(cold, `${cold.stderr}\n${agent.log().slice(-2000)}`).toMatchObject({ code: 0, stdout: "ok\n" });
      // The replica's 404 is printed as it came, and the exit code says it was not a success.
      const missing = await authed(words("endpoints invoke web /nope"));
      expect(missing.code).toBe(EXIT.error);
      expect(missing.stderr).toMatch(/^the endpoint answered HTTP 404 \(replica [0-9a-f-]{36}#0\)$/m);
      expect((await authed(words("endpoints get web"))).stdout).toMatch(/^replicas\s+0–2, 1 wanted now$/m);
      // A key that may only invoke does that, and nothing else.
      const key = await authed(words("keys create invoker --scope endpoints:invoke"));
      expect(key.code, key.stderr).toBe(0);
      const invoker = (line: string) =>
        scalar(words(line), { env: { SCALAR_API_URL: apiUrl, SCALAR_API_KEY: key.stdout.trim() } });
      expect(await invoker("endpoints invoke web /ok")).toMatchObject({ code: 0, stdout: "ok\n" });
      expect(oneErrorLine(await invoker("jobs ls"))).toMatch(/^error: missing_scope: /);
      // Unknown endpoints and bad options are one line each.
      expect(oneErrorLine(await authed(words("endpoints invoke nope /")))).toMatch(/^error: not_found: /);
      expect((await authed(words("endpoints invoke web ok"))).code).toBe(EXIT.usage);
      expect((await authed(words("endpoints rm web"))).code).toBe(0);
    });

    it("a WebSocket reaches a replica's container through wrangler dev and the node's ingress, both ways", async () => {
      // The replica: busybox's nc running node-agent/test/ws-echo.sh for each connection (GET /ok for
      // its readiness check; a WebSocket greets, echoes one message and closes with 1000).
      const script = readFileSync(join(import.meta.dirname, "../node-agent/test/ws-echo.sh"), "utf8");
      const created = await authed([
        ...words(
          `endpoints create sockets --gpus 1 --image ${testImage()} --cpu 0.5 --memory 256Mi --min-replicas 1 --port 8080 --health-path /ok --`,
        ),
        "sh",
        "-c",
        'printf %s "$1" > /ws.sh && exec nc -ll -p 8080 -e sh /ws.sh',
        "ws",
        script,
      ]);
      expect(created.code, created.stderr).toBe(0);
      const ready = await authed(words("endpoints invoke sockets /ok --wait 50"));
      expect(ready, `${ready.stderr}\n${agent.log().slice(-2000)}`).toMatchObject({ code: 0, stdout: "ok\n" });

      const ws = new WebSocket(`${apiUrl.replace(/^http/, "ws")}/v1/endpoints/sockets/invoke/chat?room=1`, {
        headers: { authorization: `Bearer ${apiKey}` },
      });
      const heard: string[] = [];
      const closed = new Promise<{ code: number; replica: string | undefined }>((resolve, reject) => {
        let replica: string | undefined;
        ws.on("upgrade", (res) => {
          replica = res.headers["scalar-replica"] as string | undefined;
        });
        ws.on("message", (data) => {
          heard.push(data.toString());
          if (heard.length === 1) ws.send("hi there");
        });
        ws.on("close", (code) => resolve({ code, replica }));
        ws.on("error", reject);
      });
      const { code, replica } = await closed;
      expect(heard).toEqual(["hello /chat?room=1", "echo hi there"]);
      expect(code).toBe(1000);
      expect(replica).toMatch(/^[0-9a-f-]{36}#0$/);

      // The CLI's WebSocket: stdin's line goes as a message, the replica's messages are printed, and
      // its echo arrives although the CLI closes as soon as its input ends.
      const cli = authed(words("endpoints invoke sockets /chat?room=2 --ws"));
      cli.child.stdin!.end("hi there\n");
      expect(await cli).toEqual({ code: 0, stdout: "hello /chat?room=2\necho hi there\n", stderr: "" });

      // Without a key the upgrade is refused like any request: 401 before any replica is asked.
      const refused = new WebSocket(`${apiUrl.replace(/^http/, "ws")}/v1/endpoints/sockets/invoke/chat`);
      const status = await new Promise<number>((resolve) => {
        refused.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
        refused.on("error", () => resolve(-1));
      });
      expect(status).toBe(401);
      expect((await authed(words("endpoints rm sockets"))).code).toBe(0);
    });

    it("endpoints logs: its replicas' lines, each with its replica", async () => {
      const created = await authed([
        ...words(
          `endpoints create cli-logs --gpus 1 --image ${testImage()} --cpu 0.5 --memory 256Mi --min-replicas 1 --`,
        ),
        "sh",
        "-c",
        "echo serving; sleep 600",
      ]);
      expect(created.code, created.stderr).toBe(0);
      let out = "";
      for (const until = Date.now() + 30_000; Date.now() < until && !out.includes("serving"); ) {
        out = (await authed(words("endpoints logs cli-logs"))).stdout;
        if (!out.includes("serving")) await new Promise((r) => setTimeout(r, 500));
      }
      expect(out, agent.log().slice(-2000)).toBe("[replica 0] serving\n");
      const json = await authed(words("endpoints logs cli-logs --json"));
      expect(JSON.parse(json.stdout)).toMatchObject({ replica: 0, attempt: 1, line: "serving", stream: "stdout" });
      expect((await authed(words("endpoints rm cli-logs"))).code).toBe(0);
    });

    it("a failing job: its stdout and stderr apart, and its exit code", async () => {
      const r = await authed([
        ...words(`jobs run --gpus 1 --image ${testImage()} ${small} --`),
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
      ]);
      expect(r.code, `${r.stderr}\n${agent.log().slice(-2000)}`).toBe(3);
      expect(r.stdout).toBe("out\n");
      expect(r.stderr).toContain("\nerr\n");
      expect(r.stderr.trimEnd().split("\n").at(-1)).toMatch(/failed after .*: exit code 3/);
      // Following its logs afterwards ends with the same line, the reason included.
      const id = /job ([0-9a-f-]{36}) submitted/.exec(r.stderr)?.[1] as string;
      const follow = await authed(words(`jobs logs -f ${id}`));
      expect(follow.code).toBe(0);
      expect(follow.stdout).toBe("out\n");
      expect(follow.stderr.trimEnd().split("\n").at(-1)).toMatch(new RegExp(`^job ${id} failed after .*: exit code 3`));
    });

    it("jobs run --json: log records between the status records and the end", async () => {
      const r = await authed(words(`jobs run --json --gpus 1 --image ${testImage()} ${small} -- echo hello`));
      expect(r.code).toBe(0);
      const records = r.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l));
      expect(records.filter((x) => x.type === "log")).toMatchObject([{ line: "hello", stream: "stdout" }]);
      expect(records.at(-1)).toMatchObject({ type: "end", job: { status: "succeeded", exit_code: 0 } });
      expect(records[0]).toMatchObject({ type: "status" });
    });

    it("jobs run: says when a failed attempt waits for its retry", async () => {
      const flags = `--gpus 1 --image ${testImage()} --cpu 0.5 --memory 256Mi --max-attempts 2 --`;
      // Running for a moment first, so the CLI follows the log stream when the attempt fails.
      const r = await authed([...words(`jobs run ${flags}`), "sh", "-c", "echo try $SCALAR_ATTEMPT; sleep 5; exit 3"]);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stdout).toBe("try 1\ntry 2\n");
      const lines = r.stderr.split("\n");
      const note = lines.indexOf("attempt 1 failed: exit code 3; attempt 2 of 2 waits for its retry");
      expect(note, r.stderr).toBeGreaterThan(-1);
      expect(lines.indexOf("--- attempt 2 ---")).toBeGreaterThan(note);
    });

    it("jobs run: a failed attempt's lines come before the retry is placed, each line once", async () => {
      const flags = `--json --gpus 1 --image ${testImage()} --cpu 0.5 --memory 256Mi --max-attempts 2 --`;
      const r = await authed([...words(`jobs run ${flags}`), "sh", "-c", "echo try $SCALAR_ATTEMPT; exit 5"]);
      expect(r.code, r.stderr).toBe(5);
      const records = r.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l));
      const logs = records.filter((x) => x.type === "log");
      expect(logs.map((x) => [x.attempt, x.line])).toEqual([
        [1, "try 1"],
        [2, "try 2"],
      ]);
      // The first attempt's line is shown before the job's end is seen: either the CLI saw attempt 1
      // running and streamed from then on (no status record after that), or it saw the job waiting
      // for its retry (about 10 s of backoff) and showed the line then, not after the end.
      const firstLine = records.indexOf(logs[0]);
      const failed = records.findIndex((x) => x.type === "status" && x.status === "failed");
      const running = records.findIndex((x) => x.type === "status" && x.status === "running");
      expect(running >= 0 || (failed >= 0 && firstLine < failed), JSON.stringify(records)).toBe(true);
      expect(r.stderr).toContain("--- attempt 2 ---");
      // `jobs logs` marks the attempts as `jobs run` does.
      const id = records.at(-1).job.id as string;
      expect(await authed(words(`jobs logs ${id}`))).toEqual({
        code: 0,
        stdout: "try 1\ntry 2\n",
        stderr: "--- attempt 2 ---\n",
      });
    });

    it("operators: nodes ls shows the agent's node; dead-letters ls and redrive a job that failed its attempts", async () => {
      const nodes = await authed(words("nodes ls"));
      expect(nodes.code, nodes.stderr).toBe(0);
      expect(nodes.stdout).toMatch(/^ID\s+REGION\s+ZONE\s+MODEL\s+FREE\/GPUS\s+STATE/);
      expect(nodes.stdout).toMatch(/\sus-west-1\s+\S+\s+H100\s+\d\/8( \(\d held\))?\s+ready\s+\d+\s+\d+s ago/);
      const nodeId = JSON.parse((await authed(words("nodes ls --state ready --json"))).stdout).data[0].id as string;
      expect(oneErrorLine(await authed(words("nodes ls --state gone")))).toMatch(/^error: --state must be one of /);

      const r = await authed([...words(`jobs run --gpus 1 --image ${testImage()} ${small} --`), "sh", "-c", "exit 7"]);
      expect(r.code, r.stderr).toBe(7);
      const id = /job ([0-9a-f-]{36}) submitted/.exec(r.stderr)?.[1] as string;
      const letters = await authed(words("dead-letters ls --limit 100"));
      expect(letters.stdout).toMatch(
        new RegExp(`^${id}\\s+[0-9a-f-]{36}\\s+us-west-1\\s+1\\s+\\d+s ago\\s+attempt 1: exit code 7$`, "m"),
      );
      const redriven = await authed(words(`dead-letters redrive ${id}`));
      expect(redriven).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`^job ${id} re-driven: `)) });
      // It runs again (and fails again): a second attempt, dead-lettered once more.
      const again = (j: { attempts: number; status: string }) => j.status === "failed" && j.attempts === 2;
      let job = { attempts: 1, status: "" };
      for (const until = Date.now() + 30_000; Date.now() < until && !again(job); ) {
        job = JSON.parse((await authed(words(`jobs get ${id} --json`))).stdout);
        if (!again(job)) await new Promise((res) => setTimeout(res, 500));
      }
      expect(job).toMatchObject({ status: "failed", attempts: 2 });
      expect((await authed(words(`jobs get ${id}`))).stdout).toMatch(
        /^attempts +2 \(re-driven: each re-drive allows 1 more\)$/m,
      );
      expect(oneErrorLine(await authed(words(`dead-letters redrive ${crypto.randomUUID()}`)))).toMatch(
        /^error: not_found: /,
      );
      expect(oneErrorLine(await authed(words("dead-letters redrive nope")))).toMatch(
        /^error: redrive takes the job's id/,
      );

      // Cordoned by hand and uncordoned: `nodes ls` shows the live state, `--json` the cordon.
      const cordoned = await authed([...words(`nodes cordon ${nodeId} --reason`), "inspecting NVLink"]);
      expect(cordoned).toMatchObject({
        code: 0,
        stdout: expect.stringMatching(new RegExp(`^node ${nodeId} cordoned; \\d+ placements? still running `)),
      });
      expect((await authed(words("nodes ls --state ready"))).stdout).toMatch(
        new RegExp(`^${nodeId}\\s.*\\sready \\(live: cordoned\\)\\s`, "m"),
      );
      const listed = JSON.parse((await authed(words("nodes ls --state ready --json"))).stdout).data;
      expect(listed.find((n: { id: string }) => n.id === nodeId).live.cordon).toMatchObject({
        reason: "inspecting NVLink",
        by: expect.stringMatching(/^api_key:/),
      });
      const uncordoned = await authed(words(`nodes uncordon ${nodeId} --json`));
      expect(JSON.parse(uncordoned.stdout)).toMatchObject({ id: nodeId, live: { state: "ready", cordon: null } });
      expect((await authed(words(`nodes uncordon ${nodeId}`))).stdout).toBe(
        `node ${nodeId} uncordoned; it takes new work\n`,
      );
      expect(oneErrorLine(await authed(words("nodes cordon node-nope")))).toMatch(/^error: not_found: /);

      // Last in this group: the node takes nothing new once drained.
      const drained = await authed(words(`nodes drain ${nodeId}`));
      expect(drained).toMatchObject({
        code: 0,
        stdout: expect.stringMatching(new RegExp(`^node ${nodeId} draining; `)),
      });
      expect(
        JSON.parse((await authed(words(`nodes ls --state draining --json`))).stdout).data.map(
          (n: { id: string }) => n.id,
        ),
      ).toContain(nodeId);
    });
  });

  // Last: it revokes the key the other tests use.
  it("a second npm start's development session revokes the keys earlier runs made, and no other", async () => {
    const me = (key: string) => fetch(`${apiUrl}/v1/me`, { headers: { authorization: `Bearer ${key}` } });
    const other = await authed(["keys", "create", "ci"]);
    expect(other.code, other.stderr).toBe(EXIT.ok);
    const next = await createDevSession({ apiUrl, databaseUrl: db.url, issuer, revokeEarlierKeys: true });
    expect(next.revokedKeys).toBe(1);
    expect((await me(apiKey)).status).toBe(401);
    expect((await me(next.apiKey)).status).toBe(200);
    expect((await me(other.stdout.trim())).status).toBe(200);
    apiKey = next.apiKey;
  });
});
