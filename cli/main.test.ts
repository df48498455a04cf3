import { describe, expect, it } from "vitest";
import type { Io } from "./context";
import { VERSION } from "./context";
import { run } from "./main";

function capture(env: Record<string, string> = {}) {
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
    onInterrupt: () => () => {},
  };
  return { io, stdout: () => out.join(""), stderr: () => err.join("") };
}

describe("run (in process)", () => {
  it("prints help and the version on stdout, exit 0", async () => {
    const help = capture();
    expect(await run(["--help"], help.io)).toBe(0);
    expect(help.stdout()).toContain("scalar jobs run");
    expect(help.stderr()).toBe("");
    const version = capture();
    expect(await run(["--version"], version.io)).toBe(0);
    expect(version.stdout()).toBe(`scalar ${VERSION}\n`);
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
      [["web", "/", "-d", "x", "-X", "GET"], "error: a GET request has no body: drop -d or pass -X POST\n"],
      [["web", "/", "--wait", "601"], "error: --wait must be at most 600\n"],
      [["web", "/", "-d", "@/nonexistent/body.json"], "error: -d @/nonexistent/body.json: ENOENT\n"],
    ] as const) {
      const c = capture(env);
      expect(await run(["endpoints", "invoke", ...args], c.io), args.join(" ")).toBe(2);
      expect(c.stdout()).toBe("");
      expect(c.stderr()).toBe(message);
    }
  });

  it("checks credentials before running a command that needs them (exit 1)", async () => {
    const c = capture();
    expect(await run(["regions", "--json"], c.io)).toBe(1);
    expect(c.stdout()).toBe("");
    expect(c.stderr()).toMatch(/^error: no Scalar API credentials found: run `npm start`.*\n$/);
  });
});
