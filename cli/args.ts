/**
 * The command line: `scalar [global options] <group> [<command>] [options] [args] [-- CMD…]`, parsed
 * with node:util parseArgs. Commands are declared as data (cli/commands/*), so help and parsing
 * come from the same table.
 */
import { parseArgs } from "node:util";
import { CliError, UsageError } from "./errors";

export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
  /** Placeholder shown in help, e.g. `N` for `--gpus N`. */
  value?: string;
  description: string;
}

export type Options = Record<string, OptionSpec>;
export type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

export interface Parsed {
  values: Values;
  positionals: string[];
  /** Everything after `--` (the container command), when the command takes one. */
  rest: string[];
}

export interface CommandSpec<Context = unknown> {
  /** Words that select it: ["jobs", "run"], ["regions"]. */
  words: string[];
  summary: string;
  /** Positionals and rest, as shown after the words, e.g. `ID`, `NAME --image IMG … [-- CMD…]`. */
  usage: string;
  positionals: { min: number; max: number };
  rest?: boolean;
  options: Options;
  examples: string[];
  run(ctx: Context, args: Parsed): Promise<number>;
}

export const GLOBAL_OPTIONS: Options = {
  "api-url": { type: "string", value: "URL", description: "API address (else SCALAR_API_URL, then saved credentials)" },
  "api-key": { type: "string", value: "KEY", description: "API key (else SCALAR_API_KEY, then saved credentials)" },
  json: { type: "boolean", description: "machine output on stdout (JSON), nothing else there" },
  help: { type: "boolean", short: "h", description: "help for the command" },
  version: { type: "boolean", short: "V", description: "print the version" },
};

export type Invocation<C> =
  | { kind: "version" }
  | { kind: "help"; words: string[] }
  | { kind: "run"; command: CommandSpec<C>; args: Parsed; global: { apiUrl?: string; apiKey?: string; json: boolean } };

/** Every option name → its type, across all commands, so command words can be found before parsing. */
function optionTypes(commands: CommandSpec<unknown>[]): Map<string, OptionSpec> {
  const all = new Map<string, OptionSpec>();
  for (const spec of [GLOBAL_OPTIONS, ...commands.map((c) => c.options)]) {
    for (const [name, o] of Object.entries(spec)) {
      all.set(`--${name}`, o);
      if (o.short) all.set(`-${o.short}`, o);
    }
  }
  return all;
}

/** Indices of the leading non-option tokens (skipping option values), up to `max`. */
function wordIndices(tokens: string[], types: Map<string, OptionSpec>, max: number): number[] {
  const found: number[] = [];
  for (let i = 0; i < tokens.length && found.length < max; i++) {
    const t = tokens[i] as string;
    if (t.startsWith("-") && t !== "-") {
      if (!t.includes("=") && types.get(t)?.type === "string") i++;
      continue;
    }
    found.push(i);
  }
  return found;
}

export function parseCommandLine<C>(argv: string[], commands: CommandSpec<C>[]): Invocation<C> {
  const dash = argv.indexOf("--");
  const head = dash >= 0 ? argv.slice(0, dash) : argv;
  const rest = dash >= 0 ? argv.slice(dash + 1) : [];
  const types = optionTypes(commands as CommandSpec<unknown>[]);
  const idx = wordIndices(head, types, 2);
  const words = idx.map((i) => head[i] as string);

  const unknownCommand = (word: string) => new UsageError(`unknown command \`${word}\`; see \`scalar --help\``);
  if (words[0] === "help") {
    const asked = wordIndices(head, types, 3)
      .slice(1)
      .map((i) => head[i] as string);
    if (asked[0] !== undefined && !commands.some((c) => c.words[0] === asked[0])) throw unknownCommand(asked[0]);
    return { kind: "help", words: asked };
  }
  if (words.length === 0) {
    if (head.includes("--version") || head.includes("-V")) return { kind: "version" };
    if (head.length === 0 || head.includes("--help") || head.includes("-h")) return { kind: "help", words: [] };
  }

  const command =
    commands.find((c) => c.words.length === 2 && c.words[0] === words[0] && c.words[1] === words[1]) ??
    commands.find((c) => c.words.length === 1 && c.words[0] === words[0]);
  if (!command) {
    const group = commands.some((c) => c.words[0] === words[0]);
    if (group && (words.length === 1 || head.includes("--help") || head.includes("-h"))) {
      return { kind: "help", words: [words[0] as string] };
    }
    if (words.length === 0) throw new UsageError(`unexpected ${head[0]}; see \`scalar --help\``);
    if (!group) throw unknownCommand(words[0] as string);
    throw new UsageError(`unknown command \`scalar ${words.join(" ")}\`; see \`scalar ${words[0]} --help\``);
  }
  const used = new Set(idx.slice(0, command.words.length));
  const remaining = head.filter((_, i) => !used.has(i));
  const name = `scalar ${command.words.join(" ")}`;
  if (remaining.includes("--help") || remaining.includes("-h")) return { kind: "help", words: command.words };
  if (remaining.includes("--version") || remaining.includes("-V")) return { kind: "version" };

  const options = { ...GLOBAL_OPTIONS, ...command.options };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: negativeValues(remaining, options),
      options: toParseArgs(options),
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(`${plainParseError(error)}; see \`${name} --help\``);
  }
  const positionals = parsed.positionals;
  if (dash >= 0 && !command.rest) throw new UsageError(`\`${name}\` takes nothing after \`--\``);
  if (positionals.length < command.positionals.min) {
    throw new UsageError(`missing argument: \`${name} ${command.usage}\``);
  }
  if (positionals.length > command.positionals.max) {
    throw new UsageError(
      `unexpected argument \`${positionals[command.positionals.max]}\`; usage: \`${name} ${command.usage}\``,
    );
  }
  const values = parsed.values as Values;
  return {
    kind: "run",
    command,
    args: { values, positionals, rest },
    global: {
      ...(typeof values["api-url"] === "string" ? { apiUrl: values["api-url"] } : {}),
      ...(typeof values["api-key"] === "string" ? { apiKey: values["api-key"] } : {}),
      json: values.json === true,
    },
  };
}

function toParseArgs(options: Options) {
  const out: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(options)) {
    out[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  }
  return out;
}

/**
 * `--priority -5`: parseArgs takes a value starting with "-" for an option and refuses it as
 * ambiguous; a negative number after an option that takes a value is that value (`--priority=-5`).
 */
function negativeValues(args: string[], options: Options): string[] {
  const takesValue = (arg: string) => {
    const long = /^--([^=]+)$/.exec(arg)?.[1];
    if (long !== undefined) return options[long]?.type === "string";
    const short = /^-([^-])$/.exec(arg)?.[1];
    return short !== undefined && Object.values(options).some((o) => o.short === short && o.type === "string");
  };
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    if (next !== undefined && /^-\d+(\.\d+)?$/.test(next) && takesValue(arg)) {
      out.push(arg.startsWith("--") ? `${arg}=${next}` : arg + next);
      i++;
    } else out.push(arg);
  }
  return out;
}

/** parseArgs's messages mention its own API ("To specify a positional argument…"); keep the first sentence. */
function plainParseError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const first = message.split(/\.(?: |\n)/)[0] ?? message;
  return first.replace(/^Unknown option '(.+)'$/, "unknown option $1").replace(/^Option '(.+?)'/, "option $1");
}

export function stringOption(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

export function listOption(values: Values, name: string): string[] {
  const v = values[name];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === "string");
  return typeof v === "string" ? [v] : [];
}

export function intOption(values: Values, name: string, range?: { min?: number; max?: number }): number | undefined {
  const raw = stringOption(values, name);
  if (raw === undefined) return undefined;
  if (!/^-?\d+$/.test(raw.trim())) throw new UsageError(`--${name} must be a whole number, not \`${raw}\``);
  const n = Number(raw);
  if (range?.min !== undefined && n < range.min) throw new UsageError(`--${name} must be at least ${range.min}`);
  if (range?.max !== undefined && n > range.max) throw new UsageError(`--${name} must be at most ${range.max}`);
  return n;
}

export function choiceOption<T extends string>(values: Values, name: string, choices: readonly T[]): T | undefined {
  const raw = stringOption(values, name);
  if (raw === undefined) return undefined;
  if (!(choices as readonly string[]).includes(raw)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, not \`${raw}\``);
  }
  return raw as T;
}

/** `K=V` pairs (`--env`, `--label`): the first `=` splits. */
export function pairs(values: Values, name: string): [string, string][] {
  return listOption(values, name).map((p) => {
    const eq = p.indexOf("=");
    if (eq <= 0) throw new UsageError(`--${name} takes KEY=VALUE, not \`${p}\``);
    return [p.slice(0, eq), p.slice(eq + 1)];
  });
}

/** An id as the API writes them (a UUID): told apart from a name or a key prefix. */
export function isUuid(text: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text);
}

/** The id an argument names: an id as it is, else what `lookup` finds by it (a name, a prefix). */
export async function idOf(
  arg: string,
  lookup: (arg: string) => Promise<{ id: string } | undefined>,
  notFound: string,
): Promise<string> {
  if (isUuid(arg)) return arg;
  const found = await lookup(arg);
  if (!found) throw new CliError(`not_found: ${notFound}`);
  return found.id;
}

/** `--limit N --cursor C` of every list command (the API's cursor pagination). */
export const PAGE_OPTIONS = {
  limit: { type: "string", value: "N", description: "per page, 1–100 (default 20)" },
  cursor: { type: "string", value: "C", description: "the next page" },
} as const;

/** The page part of a list request's query: only what was given. */
export function pageQuery(values: Values): { limit?: number; cursor?: string } {
  const limit = intOption(values, "limit", { min: 1, max: 100 });
  const cursor = stringOption(values, "cursor");
  return { ...(limit !== undefined ? { limit } : {}), ...(cursor ? { cursor } : {}) };
}
