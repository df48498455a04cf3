import { spawn } from "node:child_process";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { resolve } from "node:path";
import type { Duplex } from "node:stream";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { type WebSocket, WebSocketServer } from "ws";
import { COMMANDS } from "./commands";
import type { Io } from "./context";
import { VERSION } from "./context";
import { run } from "./main";

const BIN = resolve(import.meta.dirname, "bin/scalar.mjs");

function capture(env: Record<string, string> = {}, stdin: string[] = []) {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = {
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    stderrIsTTY: false,
    env,
    cwd: "/",
    home: "/nonexistent-home",
    now: () => 0,
    readSecret: async () => "",
    stdinLines: async function* () {
      yield* stdin;
    },
    onInterrupt: () => () => {},
  };
  return { io, stdout: () => out.join(""), stderr: () => err.join("") };
}

/** A fake API for the length of `test`, which gets the environment that points the CLI at it. */
async function withServer(
  handle: (req: IncomingMessage, res: ServerResponse) => void,
  test: (env: Record<string, string>) => Promise<void>,
  setUp: (server: Server) => void = () => {},
): Promise<void> {
  const server = createServer(handle);
  setUp(server);
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  try {
    await test({
      SCALAR_API_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      SCALAR_API_KEY: "sk_test_ab12cd34_x",
    });
  } finally {
    server.closeAllConnections();
    await new Promise((closed) => server.close(closed));
  }
}

const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
  res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));

const JOB_ID = "3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11";
/** A job as the API answers it; failed after two attempts unless told otherwise. */
const jobAnswer = (over: Record<string, unknown> = {}) => ({
  id: JOB_ID,
  status: "failed",
  tier: "flex",
  region: "us-west-1",
  image: "busybox",
  gpu_count: 1,
  max_attempts: 2,
  attempts: 2,
  exit_code: 3,
  failure_reason: "exit code 3",
  dead_lettered: true,
  placements: [],
  created_at: "2026-11-29T00:00:00.000Z",
  started_at: "2026-11-29T00:00:01.000Z",
  finished_at: "2026-11-29T00:00:30.000Z",
  ...over,
});

/** A log line as the API gives it. */
const logLine = (attempt: number, seq: number, line: string) => ({
  placement_id: `p${attempt}`,
  attempt,
  node_rank: 0,
  seq,
  stream: "stdout",
  at: "2026-11-29T00:00:00.000Z",
  line,
});

/** A followed log stream's events. */
const sse = {
  status: (s: string, attempts: number, reason: string | null) =>
    `event: status\ndata: ${JSON.stringify({ status: s, attempts, max_attempts: 2, exit_code: reason ? 3 : null, failure_reason: reason })}\n\n`,
  log: (attempt: number, seq: number, line: string) =>
    `event: log\nid: c${attempt}${seq}\ndata: ${JSON.stringify(logLine(attempt, seq, line))}\n\n`,
  end: (status: string) => `event: end\ndata: ${JSON.stringify({ status })}\n\n`,
};

describe("run (in process)", () => {
  it("prints help and the version on stdout, exit 0", async () => {
    const help = capture();
    expect(await run(["--help"], help.io)).toBe(0);
    expect(help.stdout()).toContain("scalar jobs run");
    expect(help.stderr()).toBe("");
    const version = capture();
    expect(await run(["--version"], version.io)).toBe(0);
    expect(version.stdout()).toBe(`scalar ${VERSION}\n`);
    const bogus = capture();
    expect(await run(["help", "bogus"], bogus.io)).toBe(2);
    expect(bogus.stdout()).toBe("");
    expect(bogus.stderr()).toBe("error: unknown command `bogus`; see `scalar --help`\n");
  });

  it("turns a usage error into one stderr line and exit 2, with nothing on stdout", async () => {
    const c = capture();
    expect(await run(["jobs", "run", "--gpus", "1", "--image", "x", "--cpu", "lots", "--json"], c.io)).toBe(2);
    expect(c.stdout()).toBe("");
    expect(c.stderr()).toBe("error: --cpu takes cores (`2`, `0.5`) or millicores (`500m`), not `lots`\n");
  });

  it("checks `endpoints invoke`'s request before sending it (exit 2)", async () => {
    const env = { SCALAR_API_URL: "http://127.0.0.1:9", SCALAR_API_KEY: "sk_test_x" };
    for (const [args, message] of [
      [["web", "health"], "error: PATH must start with /, not `health`\n"],
      [["web", "/", "-H", "no-colon"], "error: -H must be 'Name: value', not `no-colon`\n"],
      [
        ["web", "/", "-H", "bad name: x"],
        "error: -H `bad name: x` is not a valid HTTP header (a name without spaces or separators, a value on one line)\n",
      ],
      [["web", "/", "-d", "x", "-X", "GET"], "error: a GET request has no body: drop -d or pass -X POST\n"],
      [["web", "/", "--wait", "601"], "error: --wait must be at most 600\n"],
      [["web", "/", "-d", "@/nonexistent/body.json"], "error: -d @/nonexistent/body.json: ENOENT\n"],
      [["web", "/", "--ws", "-d", "x"], "error: --ws sends standard input's lines as messages: drop -d and -X\n"],
      [["web", "/", "--protocol", "chat"], "error: --protocol is for --ws\n"],
    ] as const) {
      const c = capture(env);
      expect(await run(["endpoints", "invoke", ...args], c.io), args.join(" ")).toBe(2);
      expect(c.stdout()).toBe("");
      expect(c.stderr()).toBe(message);
    }
  });

  it("checks every list's --limit before looking for credentials (exit 2)", async () => {
    const lists = COMMANDS.filter((c) => c.options.limit);
    expect(lists.length).toBeGreaterThan(5);
    for (const command of lists) {
      const c = capture();
      expect(await run([...command.words, "--limit", "abc"], c.io), command.words.join(" ")).toBe(2);
      expect(c.stderr()).toBe("error: --limit must be a whole number, not `abc`\n");
    }
  });

  it("checks credentials before running a command that needs them (exit 1)", async () => {
    const c = capture();
    expect(await run(["regions", "--json"], c.io)).toBe(1);
    expect(c.stdout()).toBe("");
    expect(c.stderr()).toMatch(/^error: no Scalar API credentials found: run `npm start`.*\n$/);
  });
});

describe("jobs logs -f", () => {
  it("says once that a failed attempt waits for its retry, also when the stream is resumed", async () => {
    const { status, log } = sse;
    const streams = [
      // Cut by the server (its 10 minutes) while the retry waits.
      log(1, 0, "try 1") + status("queued", 1, "exit code 3") + "event: reconnect\nid: c10\ndata: {}\n\n",
      status("queued", 1, "exit code 3") + log(2, 0, "try 2") + status("failed", 2, "exit code 3") + sse.end("failed"),
    ];
    await withServer(
      (req, res) => {
        if (req.url?.includes("/logs")) {
          res.writeHead(200, { "content-type": "text/event-stream" }).end(streams.shift() ?? "");
        } else json(res, 200, jobAnswer());
      },
      async (env) => {
        const c = capture(env);
        expect(await run(["jobs", "logs", "-f", JOB_ID], c.io), c.stderr()).toBe(0);
        expect(c.stdout()).toBe("try 1\ntry 2\n");
        expect(c.stderr().split("\n").slice(0, 2)).toEqual([
          "attempt 1 failed: exit code 3; attempt 2 of 2 waits for its retry",
          "--- attempt 2 ---",
        ]);
      },
    );
  });
});

describe("watching a job: Ctrl-C and a refused reconnect", () => {
  /** `jobs run` of a job that runs at once, and its logs' answers (`/logs` requests, in order). */
  function jobApi(logs: (req: IncomingMessage, res: ServerResponse) => void) {
    return (req: IncomingMessage, res: ServerResponse) => {
      if (req.url?.includes("/logs")) logs(req, res);
      else if (req.method === "POST") json(res, 201, jobAnswer({ status: "running", attempts: 1, exit_code: null }));
      else json(res, 200, jobAnswer());
    };
  }
  const RUN = ["jobs", "run", "--gpus", "1", "--image", "busybox", "--", "true"];

  /** Runs the command and presses Ctrl-C after `ms`. */
  async function interrupted(argv: string[], env: Record<string, string>, ms: number) {
    const c = capture(env);
    let press = () => {};
    c.io.onInterrupt = (handler) => {
      press = handler;
      return () => {};
    };
    const timer = setTimeout(() => press(), ms);
    try {
      return { code: await run(argv, c.io), stderr: c.stderr() };
    } finally {
      clearTimeout(timer);
    }
  }

  it("exits 130 when Ctrl-C comes while the stream is asked for or waited on after a failure", async () => {
    // Never answered: Ctrl-C aborts the request itself.
    await withServer(
      jobApi(() => {}),
      async (env) => {
        for (const argv of [RUN, ["jobs", "logs", "-f", JOB_ID]]) {
          const { code, stderr } = await interrupted(argv, env, 200);
          expect(code, stderr).toBe(130);
          expect(stderr).not.toContain("error:");
        }
      },
    );
    // Cut before any answer (fetch failed): Ctrl-C comes during the wait before the next try.
    await withServer(
      jobApi((req) => req.socket.destroy()),
      async (env) => {
        for (const argv of [RUN, ["jobs", "logs", "-f", JOB_ID]]) {
          const { code, stderr } = await interrupted(argv, env, 300);
          expect(code, stderr).toBe(130);
          expect(stderr).not.toContain("error:");
        }
      },
    );
  });

  it("resumes after a 429 rate_limited (after its Retry-After) and a stream_failed, then exits with the job's code", async () => {
    const asked: string[] = [];
    const answers: ((res: ServerResponse) => void)[] = [
      (res) => json(res, 429, { error: { code: "rate_limited", message: "slow down" } }, { "retry-after": "2" }),
      (res) =>
        res
          .writeHead(200, { "content-type": "text/event-stream" })
          .end(`${sse.log(1, 0, "one")}event: error\ndata: {"code":"stream_failed"}\n\n`),
      (res) =>
        res
          .writeHead(200, { "content-type": "text/event-stream" })
          .end(sse.log(1, 1, "two") + sse.status("failed", 1, "exit code 3") + sse.end("failed")),
    ];
    await withServer(
      jobApi((req, res) => {
        asked.push(new URL(req.url ?? "", "http://x").searchParams.get("cursor") ?? "");
        answers.shift()?.(res);
      }),
      async (env) => {
        const c = capture(env);
        const started = Date.now();
        expect(await run(RUN, c.io), c.stderr()).toBe(3);
        // 2 s as the 429 asked (the first retry's own wait is 1 s), then 1 s after the stream failed.
        expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
        expect(c.stdout()).toBe("one\ntwo\n");
        expect(c.stderr()).toMatch(
          /job 3f1c2b0e-.* failed after 29\.0s: exit code 3; dead-lettered after 2 attempts\n$/,
        );
        expect(asked).toEqual(["", "", "c10"]);
      },
    );
  });

  it("ends at once, as one line, when the server ends the stream for revoked credentials", async () => {
    let asked = 0;
    const revoked = { code: "access_revoked", message: "the credentials were revoked" };
    await withServer(
      jobApi((_req, res) => {
        asked += 1;
        res
          .writeHead(200, { "content-type": "text/event-stream" })
          .end(`event: error\ndata: ${JSON.stringify(revoked)}\n\n`);
      }),
      async (env) => {
        const c = capture(env);
        expect(await run(["jobs", "logs", "-f", JOB_ID], c.io)).toBe(1);
        expect(c.stderr()).toBe(
          `error: the log stream of job ${JOB_ID} ended: access_revoked: the credentials were revoked\n`,
        );
        expect(asked).toBe(1);
      },
    );
  });
});

describe("jobs run, while a job waits for its retry", () => {
  it("reads the lines that arrived since the last read, not the whole log again", async () => {
    const lines = Array.from({ length: 3000 }, (_, i) => logLine(1, i, `line ${i}`));
    const pages: string[] = [];
    let streamed = false;
    await withServer(
      (req, res) => {
        const url = new URL(req.url ?? "", "http://x");
        if (req.method === "POST") json(res, 201, jobAnswer({ status: "queued", attempts: 1, exit_code: null }));
        else if (url.searchParams.get("follow") === "true") {
          streamed = true;
          // The last line again: shown once.
          res
            .writeHead(200, { "content-type": "text/event-stream" })
            .end(sse.log(1, lines.length - 1, `line ${lines.length - 1}`) + sse.end("failed"));
        } else if (url.pathname.endsWith("/logs")) {
          const cursor = url.searchParams.get("cursor") ?? "";
          pages.push(cursor);
          const from = Number(cursor || 0);
          const next = from + 1000 < lines.length ? String(from + 1000) : null;
          json(res, 200, { data: lines.slice(from, from + 1000), next_cursor: next });
          // More lines arrive after the first read.
          if (cursor === "2000" && lines.length === 3000) {
            for (let i = 3000; i < 3500; i++) lines.push(logLine(1, i, `line ${i}`));
          }
        } else {
          // Queued for the retry until a second read has reached the new lines, then running; failed once streamed.
          const status = streamed ? "failed" : pages.includes("3000") ? "running" : "queued";
          json(res, 200, status === "failed" ? jobAnswer() : jobAnswer({ status, attempts: 1, exit_code: null }));
        }
      },
      async (env) => {
        const c = capture(env);
        expect(await run(["jobs", "run", "--gpus", "1", "--image", "busybox", "--", "true"], c.io), c.stderr()).toBe(3);
        expect(c.stdout()).toBe(Array.from({ length: 3500 }, (_, i) => `line ${i}\n`).join(""));
        // The first flush reads the three pages; the second from the last page it read.
        expect(pages).toEqual(["", "1000", "2000", "2000", "3000"]);
      },
    );
  });
});

describe("keys create without --scope", () => {
  it("asks for the default scopes the caller holds, no more", async () => {
    let held = ["jobs:read", "endpoints:read", "billing:read"];
    const asked: string[][] = [];
    const read = async (req: IncomingMessage) => {
      let body = "";
      for await (const chunk of req) body += String(chunk);
      return JSON.parse(body) as { name: string; scopes: string[] };
    };
    await withServer(
      (req, res) => {
        if (req.url === "/v1/me") return json(res, 200, { scopes: held });
        void read(req).then(({ name, scopes }) => {
          asked.push(scopes);
          // As the API does: no scope beyond the caller's.
          const beyond = scopes.filter((s) => !held.includes(s));
          if (beyond.length > 0) {
            json(res, 403, { error: { code: "scope_not_allowed", message: `not held: ${beyond.join(", ")}` } });
          } else json(res, 201, { id: "k1", name, prefix: "sk_test_k2m9x1qa", scopes, secret: "sk_test_k2m9x1qa_s" });
        });
      },
      async (env) => {
        const viewer = capture(env);
        expect(await run(["keys", "create", "ci"], viewer.io), viewer.stderr()).toBe(0);
        expect(viewer.stdout()).toBe("sk_test_k2m9x1qa_s\n");
        expect(asked).toEqual([["jobs:read", "endpoints:read"]]);

        // Scopes given are sent as they are (the API judges them).
        const given = capture(env);
        expect(await run(["keys", "create", "ci", "--scope", "billing:read"], given.io)).toBe(0);
        expect(asked.at(-1)).toEqual(["billing:read"]);

        held = ["admin"];
        const none = capture(env);
        expect(await run(["keys", "create", "ci"], none.io)).toBe(1);
        expect(none.stderr()).toBe(
          "error: you hold none of the default scopes (jobs:read, jobs:write, endpoints:read, endpoints:write, endpoints:invoke); give the key some of yours with --scope: admin\n",
        );
        expect(asked).toHaveLength(2);
      },
    );
  });

  it("refuses an unknown scope before looking for credentials (exit 2)", async () => {
    const c = capture();
    expect(await run(["keys", "create", "k", "--scope", "bogus"], c.io)).toBe(2);
    expect(c.stderr()).toMatch(/^error: --scope must be one of jobs:read, .*, not `bogus`\n$/);
  });
});

describe("the bin, its output piped into a reader that stops early (`| head -1`)", () => {
  it("stops quietly, exit 0, with no stack trace on stderr", async () => {
    const line = (seq: number) => sse.log(1, seq, `line ${seq}`);
    await withServer(
      (req, res) => {
        if (req.method === "POST") json(res, 201, jobAnswer({ status: "running", attempts: 1, exit_code: null }));
        else if (!req.url?.includes("/logs")) json(res, 200, jobAnswer({ status: "running" }));
        else {
          // Lines as long as the reader reads.
          res.writeHead(200, { "content-type": "text/event-stream" });
          let seq = 0;
          const timer = setInterval(() => res.write(Array.from({ length: 100 }, () => line(seq++)).join("")), 5);
          res.on("close", () => clearInterval(timer));
        }
      },
      async (env) => {
        for (const argv of [
          ["jobs", "logs", "-f", JOB_ID],
          ["jobs", "run", "--gpus", "1", "--image", "busybox", "--", "true"],
        ]) {
          const child = spawn(process.execPath, [BIN, ...argv], {
            env: { PATH: process.env.PATH ?? "", HOME: "/nonexistent-home", ...env },
            cwd: tmpdir(),
          });
          let stderr = "";
          child.stderr.on("data", (chunk) => {
            stderr += String(chunk);
          });
          const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
          // The first lines read, the reader goes away.
          await new Promise((read) => child.stdout.once("data", read));
          child.stdout.destroy();
          const code = await exited;
          expect(stderr, argv.join(" ")).not.toContain("Unhandled 'error'");
          expect(stderr).not.toContain("EPIPE");
          expect(code, stderr).toBe(0);
        }
      },
    );
  }, 30_000);
});

describe("an account on payment hold", () => {
  const hold = {
    since: "2026-12-15T01:17:00.000Z",
    invoice_id: "3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11",
    month: "2026-11",
    amount_due_cents: 58_700,
    currency: "usd",
    hosted_invoice_url: "https://invoice.stripe.com/i/acct_1/test_abc",
  };
  const me = {
    user: null,
    api_key: { id: "7c9e6679-7425-40de-944b-e07fc1f90ae7", prefix: "sk_test_ab12cd34" },
    account: {
      id: "14b0aaba-cff5-422d-aee9-21908b85e51a",
      name: "acme",
      role: "owner",
      fast_tier_enabled: false,
      is_operator: false,
      quotas: { max_concurrent_gpus: 16, gpus_in_use: 0, monthly_spend_cap_cents: null, month_to_date_cents: 0 },
      rate_limit: { plan: "standard", account_limit: 600, key_limit: 300, window_s: 60, invoke_limit: 6000 },
      billing: { payment_hold: hold as Record<string, unknown> },
    },
    accounts: [],
    scopes: ["jobs:write"],
  };
  const refusal = {
    error: {
      code: "payment_required",
      message: `invoice SCL-0042 (2026-11, 587.00 USD) is unpaid: the account starts no new jobs or endpoints until it is paid; pay it at ${hold.hosted_invoice_url}`,
      details: { ...hold, since: undefined },
      request_id: "req_hold",
    },
  };

  it("`jobs run` prints the 402 as one line naming the invoice; `whoami` shows the hold", async () => {
    const server = createServer((req, res) => {
      const [status, body] = req.url === "/v1/me" ? [200, me] : [402, refusal];
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    });
    await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
    try {
      const env = {
        SCALAR_API_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        SCALAR_API_KEY: "sk_test_ab12cd34_x",
      };
      const submit = capture(env);
      expect(await run(["jobs", "run", "--gpus", "1", "--image", "busybox", "--", "true"], submit.io)).toBe(1);
      expect(submit.stdout()).toBe("");
      expect(submit.stderr()).toBe(`error: payment_required: ${refusal.error.message}\n`);

      const who = capture(env);
      expect(await run(["whoami"], who.io)).toBe(0);
      expect(who.stdout()).toMatch(
        /^payment hold {2}since 2026-12-15T01:17:00.000Z: invoice 2026-11 \(587\.00 USD\) unpaid, no new jobs or endpoints; pay at https:\/\/invoice\.stripe\.com\/i\/acct_1\/test_abc$/m,
      );

      // Without billing:read the API gives neither the amount nor the page.
      me.account.billing.payment_hold = { ...hold, amount_due_cents: null, currency: null, hosted_invoice_url: null };
      const member = capture(env);
      expect(await run(["whoami"], member.io)).toBe(0);
      expect(member.stdout()).toMatch(
        /^payment hold {2}since 2026-12-15T01:17:00.000Z: invoice 2026-11 unpaid, no new jobs or endpoints; an owner or admin can see and pay it$/m,
      );

      // An operator account: operator commands need the admin scope too.
      me.account.is_operator = true;
      const reader = capture(env);
      expect(await run(["whoami"], reader.io)).toBe(0);
      expect(reader.stdout()).toMatch(
        /^operator {6}no: the account is an operator's, but this credential lacks the admin scope$/m,
      );
      me.scopes = ["jobs:write", "admin"];
      const admin = capture(env);
      expect(await run(["whoami"], admin.io)).toBe(0);
      expect(admin.stdout()).toMatch(/^operator {6}yes \(nodes, dead-letters\)$/m);
    } finally {
      await new Promise((closed) => server.close(closed));
    }
  });
});

describe("endpoints invoke -i", () => {
  it("prints a compressed answer decoded, and says its encoding headers are from before decoding", async () => {
    const server = createServer((_req, res) => {
      const body = gzipSync("hello, decoded\n");
      res
        .writeHead(200, {
          "content-type": "text/plain",
          "content-encoding": "gzip",
          "content-length": body.length,
          "scalar-replica": "ep#0",
        })
        .end(body);
    });
    await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
    try {
      const c = capture({
        SCALAR_API_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        SCALAR_API_KEY: "sk_test_ab12cd34_x",
      });
      expect(await run(["endpoints", "invoke", "web", "/x", "-i"], c.io)).toBe(0);
      expect(c.stdout()).toBe("hello, decoded\n");
      expect(c.stderr()).toMatch(/^HTTP 200 OK \(replica ep#0\)\n/);
      expect(c.stderr()).toMatch(/^content-encoding: gzip \(before decoding\)$/m);
      expect(c.stderr()).toMatch(/^content-length: \d+ \(before decoding\)$/m);
      expect(c.stderr()).toMatch(/^content-type: text\/plain$/m);
    } finally {
      await new Promise((closed) => server.close(closed));
    }
  });
});

describe("endpoints invoke: a redirect", () => {
  it("is the replica's answer, printed with its Location and exit 0, not followed", async () => {
    const seen: string[] = [];
    await withServer(
      (req, res) => {
        seen.push(req.url ?? "");
        if (req.url === "/v1/endpoints/web/invoke/dir") {
          res.writeHead(302, { location: "/elsewhere", "scalar-replica": "ep#0" }).end("moved\n");
        } else json(res, 404, { error: { code: "not_found", message: "no route" } });
      },
      async (env) => {
        const c = capture(env);
        expect(await run(["endpoints", "invoke", "web", "/dir"], c.io), c.stderr()).toBe(0);
        expect(c.stdout()).toBe("moved\n");
        expect(c.stderr()).toBe("the endpoint answered HTTP 302, location /elsewhere (replica ep#0)\n");
        expect(seen).toEqual(["/v1/endpoints/web/invoke/dir"]);
      },
    );
  });
});

describe("endpoints invoke --ws", () => {
  /**
   * The API's invoke route as the CLI sees it: a WebSocket server on /v1/endpoints/web/invoke/…
   * that checks the key, answers with a replica header, then does what `behave` says.
   */
  async function withApi(
    behave: (ws: WebSocket, req: IncomingMessage) => void,
    test: (env: Record<string, string>) => Promise<void>,
  ): Promise<void> {
    const wss = new WebSocketServer({ noServer: true, handleProtocols: (offered) => [...offered][0] ?? false });
    wss.on("headers", (headers) => headers.push("scalar-replica: ep#0"));
    const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (req.headers.authorization !== "Bearer sk_test_ab12cd34_x" || !req.url?.startsWith("/v1/endpoints/web/")) {
        const body = JSON.stringify({ error: { code: "not_found", message: "no endpoint nope" } });
        socket.end(
          `HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nx-request-id: req-1\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
        );
        return;
      }
      if (req.url.endsWith("/plain")) {
        // The replica answered the upgrade with a plain response (relayed with its replica header).
        socket.end("HTTP/1.1 200 OK\r\nscalar-replica: ep#0\r\ncontent-length: 17\r\n\r\nnot a websocket\r\n");
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => behave(ws, req));
    };
    await withServer(
      (_req, res) =>
        json(res, 404, { error: { code: "not_found", message: "no endpoint nope" } }, { "x-request-id": "req-1" }),
      async (env) => {
        try {
          await test(env);
        } finally {
          for (const client of wss.clients) client.terminate();
        }
      },
      (server) => server.on("upgrade", upgrade),
    );
  }

  it("sends each stdin line as a message, prints each message received, and closes with 1000 at the end of input", async () => {
    const closes: number[] = [];
    await withApi(
      (ws, req) => {
        ws.send(`hello ${req.url} ${ws.protocol}`);
        ws.on("message", (data, isBinary) => {
          if (String(data) === "bytes") ws.send(Buffer.from([0xff, 0x00, 0x41]), { binary: true });
          else ws.send(`echo ${String(data)}${isBinary ? " (binary)" : ""}`);
        });
        ws.on("close", (code) => closes.push(code));
      },
      async (env) => {
        const c = capture(env, ["one", "two words", ""]);
        const bytes: Uint8Array[] = [];
        c.io.stdoutBytes = (b) => bytes.push(b);
        const code = await run(["endpoints", "invoke", "web", "/chat?room=1", "--ws", "--protocol", "chat.v1"], c.io);
        expect(code, c.stderr()).toBe(0);
        expect(c.stdout()).toBe(
          "hello /v1/endpoints/web/invoke/chat?room=1 chat.v1\necho one\necho two words\necho \n",
        );
        expect(c.stderr()).toBe("");
        expect(bytes).toEqual([]);
        expect(closes).toEqual([1000]);

        const json = capture(env, ["bytes", "a"]);
        expect(await run(["endpoints", "invoke", "web", "/", "--ws", "--json"], json.io)).toBe(0);
        expect(
          json
            .stdout()
            .trimEnd()
            .split("\n")
            .map((l) => JSON.parse(l)),
        ).toEqual([
          { type: "message", text: "hello /v1/endpoints/web/invoke/ " },
          { type: "message", base64: Buffer.from([0xff, 0x00, 0x41]).toString("base64") },
          { type: "message", text: "echo a" },
          { type: "close", code: 1000, reason: "" },
        ]);

        const b = capture(env, ["bytes"]);
        b.io.stdoutBytes = (chunk) => bytes.push(chunk);
        expect(await run(["endpoints", "invoke", "web", "/", "--ws"], b.io)).toBe(0);
        expect(bytes.map((x) => [...x])).toEqual([[0xff, 0x00, 0x41]]);
      },
    );
  });

  it("exits 1 with the code and reason when the endpoint closes otherwise, and prints the handshake with -i", async () => {
    await withApi(
      (ws) => ws.close(4001, "room full"),
      async (env) => {
        const c = capture(env);
        expect(await run(["endpoints", "invoke", "web", "/", "--ws", "-i"], c.io)).toBe(1);
        expect(c.stderr()).toMatch(/^HTTP 101 Switching Protocols \(replica ep#0\)\n/);
        expect(c.stderr()).toMatch(/^upgrade: websocket$/m);
        expect(c.stderr()).toMatch(/^the WebSocket closed with code 4001: room full\n$/m);
      },
    );
  });

  it("prints the API's refusal as one error line, and an unreachable API as such", async () => {
    await withApi(
      () => {},
      async (env) => {
        const c = capture(env);
        expect(await run(["endpoints", "invoke", "nope", "/", "--ws"], c.io)).toBe(1);
        expect(c.stdout()).toBe("");
        expect(c.stderr()).toBe("error: not_found: no endpoint nope\n");
        const plain = capture(env);
        expect(await run(["endpoints", "invoke", "web", "/plain", "--ws"], plain.io)).toBe(1);
        expect(plain.stdout()).toBe("not a websocket\r\n");
        expect(plain.stderr()).toBe("the endpoint answered HTTP 200 instead of a WebSocket (replica ep#0)\n");
      },
    );
    const down = capture({ SCALAR_API_URL: "http://127.0.0.1:9", SCALAR_API_KEY: "sk_test_x" });
    expect(await run(["endpoints", "invoke", "web", "/", "--ws"], down.io)).toBe(1);
    expect(down.stderr()).toMatch(
      /^error: could not reach the Scalar API at http:\/\/127\.0\.0\.1:9 \(.*\); is `npm start` running\?\n$/,
    );
  });
});
