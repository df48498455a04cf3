import { describe, expect, it } from "vitest";
import { GLOBAL_OPTIONS, type OptionSpec, pairs, parseCommandLine } from "./args";
import { COMMANDS } from "./commands";
import { EXIT, UsageError } from "./errors";

const parse = (line: string[]) => parseCommandLine(line, COMMANDS);

function ran(line: string[]) {
  const r = parse(line);
  if (r.kind !== "run") throw new Error(`expected a command, got ${r.kind}`);
  return r;
}

function usageError(line: string[]): string {
  try {
    parse(line);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    expect((error as UsageError).exitCode).toBe(EXIT.usage);
    return (error as Error).message;
  }
  throw new Error("expected a usage error");
}

describe("parseCommandLine", () => {
  it("finds two-word commands and their options, with the container command after --", () => {
    const r = ran([
      "jobs",
      "run",
      "--gpus",
      "2",
      "--image",
      "busybox",
      "--env",
      "A=1",
      "--env",
      "B=2",
      "--",
      "sh",
      "-c",
      "echo --x",
    ]);
    expect(r.command.words).toEqual(["jobs", "run"]);
    expect(r.args.values.gpus).toBe("2");
    expect(r.args.values.env).toEqual(["A=1", "B=2"]);
    expect(r.args.rest).toEqual(["sh", "-c", "echo --x"]);
    expect(r.global.json).toBe(false);
  });

  it("takes global options before the command words, and option values that look like words", () => {
    const r = ran(["--api-url", "http://x:1", "--json", "jobs", "--image", "ls", "run", "--gpus", "1"]);
    expect(r.command.words).toEqual(["jobs", "run"]);
    expect(r.global).toEqual({ apiUrl: "http://x:1", json: true });
    expect(r.args.values.image).toBe("ls");
  });

  it("takes a negative number after an option as its value; other dashes after an option stay one-line errors", () => {
    const r = ran(["jobs", "run", "--priority", "-5", "--gpus", "-1", "--image", "busybox", "--", "echo", "-5"]);
    expect(r.args.values.priority).toBe("-5");
    expect(r.args.values.gpus).toBe("-1");
    expect(r.args.rest).toEqual(["echo", "-5"]);
    const message = usageError(["jobs", "run", "--image", "--gpus", "1"]);
    expect(message).not.toContain("\n");
    expect(message).toMatch(/^option --image argument is ambiguous; see `scalar jobs run --help`$/);
  });

  it("accepts --opt=value and short flags", () => {
    const r = ran(["jobs", "logs", "-f", "--api-key=sk_test_x", "abc"]);
    expect(r.args.values.follow).toBe(true);
    expect(r.global.apiKey).toBe("sk_test_x");
    expect(r.args.positionals).toEqual(["abc"]);
  });

  it("answers help and version", () => {
    expect(parse([])).toEqual({ kind: "help", words: [] });
    expect(parse(["--help"])).toEqual({ kind: "help", words: [] });
    expect(parse(["help", "jobs"])).toEqual({ kind: "help", words: ["jobs"] });
    expect(parse(["help", "jobs", "run"])).toEqual({ kind: "help", words: ["jobs", "run"] });
    expect(parse(["jobs"])).toEqual({ kind: "help", words: ["jobs"] });
    expect(parse(["jobs", "--help"])).toEqual({ kind: "help", words: ["jobs"] });
    expect(parse(["jobs", "run", "-h"])).toEqual({ kind: "help", words: ["jobs", "run"] });
    expect(parse(["--version"])).toEqual({ kind: "version" });
    expect(parse(["-V"])).toEqual({ kind: "version" });
  });

  it("refuses what it does not know, naming it, as a usage error", () => {
    expect(usageError(["jobz"])).toBe("unknown command `jobz`; see `scalar --help`");
    expect(usageError(["help", "jobz"])).toBe("unknown command `jobz`; see `scalar --help`");
    expect(usageError(["jobs", "start"])).toBe("unknown command `scalar jobs start`; see `scalar jobs --help`");
    expect(usageError(["jobs", "ls", "--bogus"])).toBe("unknown option --bogus; see `scalar jobs ls --help`");
    expect(usageError(["jobs", "get"])).toBe("missing argument: `scalar jobs get ID`");
    expect(usageError(["jobs", "get", "a", "b"])).toContain("unexpected argument `b`");
    expect(usageError(["jobs", "ls", "--", "x"])).toBe("`scalar jobs ls` takes nothing after `--`");
    expect(usageError(["jobs", "ls", "--limit"])).toContain("option --limit");
  });

  it("gives every option name, long and short, one type across all commands (words are found before parsing)", () => {
    const seen = new Map<string, OptionSpec["type"]>();
    for (const options of [GLOBAL_OPTIONS, ...COMMANDS.map((c) => c.options)]) {
      for (const [name, o] of Object.entries(options)) {
        for (const flag of [`--${name}`, ...(o.short ? [`-${o.short}`] : [])]) {
          expect(seen.get(flag) ?? o.type, flag).toBe(o.type);
          seen.set(flag, o.type);
        }
      }
    }
  });

  it("finds the command after a short flag given before its words", () => {
    const r = ran(["jobs", "-D", "run", "--gpus", "1", "--image", "x", "--", "true"]);
    expect(r.command.words).toEqual(["jobs", "run"]);
    expect(r.args.values.detach).toBe(true);
    expect(ran(["endpoints", "-d", "x", "invoke", "web"]).args.values.data).toBe("x");
  });
});

describe("pairs", () => {
  it("splits at the first = and refuses a pair without a key", () => {
    expect(pairs({ env: ["A=b=c", "EMPTY="] }, "env")).toEqual([
      ["A", "b=c"],
      ["EMPTY", ""],
    ]);
    expect(() => pairs({ env: ["=x"] }, "env")).toThrow("--env takes KEY=VALUE, not `=x`");
    expect(() => pairs({ label: "novalue" }, "label")).toThrow(UsageError);
  });
});
