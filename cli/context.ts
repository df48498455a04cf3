/** What a command gets: its I/O, the output mode, and the API connection (made on first use). */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { type Connection, connect } from "./api/client";
import type { Options, Values } from "./args";
import { type Credentials, requireCredentials } from "./credentials";
import { nextPageCommand } from "./output";

export interface Io {
  stdout(text: string): void;
  /** Bytes as they are (an endpoint's answer); absent: decoded as UTF-8 and given to `stdout`. */
  stdoutBytes?(bytes: Uint8Array): void;
  stderr(text: string): void;
  stderrIsTTY: boolean;
  columns?: number;
  env: Record<string, string | undefined>;
  cwd: string;
  home: string;
  now(): number;
  /** Reads one line from standard input (`scalar login` without `--api-key`); hidden on a terminal. */
  readSecret(prompt: string): Promise<string>;
  /** Standard input line by line, without line ends, until its end (`endpoints invoke --ws`). */
  stdinLines(): AsyncIterable<string>;
  /** Runs `handler` on Ctrl-C instead of exiting; returns the function that removes it. */
  onInterrupt(handler: () => void): () => void;
}

export interface Context {
  io: Io;
  json: boolean;
  flags: { apiUrl?: string; apiKey?: string };
  credentials(): Credentials;
  connection(): Connection;
}

export const VERSION: string = (
  JSON.parse(readFileSync(resolve(import.meta.dirname, "../package.json"), "utf8")) as { version: string }
).version;

export const USER_AGENT = `scalar-cli/${VERSION}`;

export function createContext(io: Io, global: { apiUrl?: string; apiKey?: string; json: boolean }): Context {
  let credentials: Credentials | undefined;
  let connection: Connection | undefined;
  const flags = {
    ...(global.apiUrl ? { apiUrl: global.apiUrl } : {}),
    ...(global.apiKey ? { apiKey: global.apiKey } : {}),
  };
  const ctx: Context = {
    io,
    json: global.json,
    flags,
    credentials() {
      credentials ??= requireCredentials({ flags, env: io.env, cwd: io.cwd, home: io.home });
      return credentials;
    },
    connection() {
      const c = ctx.credentials();
      connection ??= connect(c.apiUrl, c.apiKey, USER_AGENT);
      return connection;
    },
  };
  return ctx;
}

/** Machine output: one JSON document on stdout. */
export function printJson(ctx: Context, value: unknown): void {
  ctx.io.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * A list command's page: with `--json` the page as the API gave it; else its table on stdout (or
 * `none` on stderr) and, when there is more, the command line of the next page on stderr.
 */
export function printPage<T>(
  ctx: Context,
  page: { data: T[]; next_cursor: string | null },
  show: {
    command: { words: readonly string[]; options: Options };
    values: Values;
    none: string;
    table: (rows: T[], now: number) => string;
  },
): void {
  if (ctx.json) {
    printJson(ctx, page);
    return;
  }
  if (page.data.length === 0) ctx.io.stderr(`${show.none}\n`);
  else ctx.io.stdout(show.table(page.data, ctx.io.now()));
  if (page.next_cursor) ctx.io.stderr(`more: ${nextPageCommand(show.command, show.values, page.next_cursor)}\n`);
}
