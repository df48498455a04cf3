/**
 * The `scalar` CLI: parse the command line, run the command, print any failure as one line on
 * stderr, and return the exit code (docs/cli.md). `run` takes its I/O injected; `main` is the process.
 */

import { homedir } from "node:os";
import { createInterface } from "node:readline";
import { parseCommandLine } from "./args";
import { COMMANDS } from "./commands";
import { createContext, type Io, VERSION } from "./context";
import { EXIT, errorLine, exitCodeOf } from "./errors";
import { renderHelp } from "./help";

export async function run(argv: string[], io: Io): Promise<number> {
  try {
    const invocation = parseCommandLine(argv, COMMANDS);
    if (invocation.kind === "version") {
      io.stdout(`scalar ${VERSION}\n`);
      return EXIT.ok;
    }
    if (invocation.kind === "help") {
      io.stdout(renderHelp(COMMANDS, invocation.words, VERSION));
      return EXIT.ok;
    }
    // Credentials are looked up when a command first calls the API, after it has checked its input.
    return await invocation.command.run(createContext(io, invocation.global), invocation.args);
  } catch (error) {
    io.stderr(`${errorLine(error)}\n`);
    return exitCodeOf(error);
  }
}

function readSecret(prompt: string): Promise<string> {
  const input = process.stdin;
  const rl = createInterface({ input, output: process.stderr, terminal: Boolean(input.isTTY) });
  return new Promise((done) => {
    if (input.isTTY) {
      process.stderr.write(prompt);
      // Echo nothing of what is typed.
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => {};
    }
    let answered = false;
    rl.once("line", (line) => {
      answered = true;
      if (input.isTTY) process.stderr.write("\n");
      rl.close();
      done(line);
    });
    rl.once("close", () => {
      if (!answered) done("");
    });
  });
}

export function processIo(): Io {
  return {
    stdout: (t) => process.stdout.write(t),
    stdoutBytes: (b) => process.stdout.write(b),
    stderr: (t) => process.stderr.write(t),
    stderrIsTTY: Boolean(process.stderr.isTTY),
    ...(process.stderr.columns ? { columns: process.stderr.columns } : {}),
    env: process.env,
    cwd: process.cwd(),
    home: homedir(),
    now: () => Date.now(),
    readSecret,
    stdinLines: () => createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY }),
    onInterrupt(handler) {
      const listener = () => handler();
      process.on("SIGINT", listener);
      return () => process.off("SIGINT", listener);
    },
  };
}

/**
 * Standard output failed: its reader went away (`scalar jobs logs … | head`), so nothing more can
 * be shown and the CLI stops quietly (a job it watched runs on); any other failure is one line.
 */
function stdoutFailed(error: NodeJS.ErrnoException): void {
  if (error.code === "EPIPE") process.exit(EXIT.ok);
  process.stderr.write(`error: cannot write to standard output (${error.code ?? error.message})\n`);
  process.exit(EXIT.error);
}

export async function main(): Promise<never> {
  process.stdout.on("error", stdoutFailed);
  // Nowhere left to say anything: carry on without it.
  process.stderr.on("error", () => {});
  const code = await run(process.argv.slice(2), processIo());
  // Let piped output drain before exiting (open keep-alive sockets would otherwise hold the process).
  await new Promise<void>((done) => process.stdout.write("", () => done()));
  process.exit(code);
}
