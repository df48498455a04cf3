/** Command-line helpers the load tools share (tools/load/cli.ts, tools/bench/invoke.ts). */

/** A bad command line: the tool prints it with its usage and exits 2. */
export class UsageError extends Error {}

/**
 * The command line parsed, or what to exit with: 2 after saying what is wrong with the usage, 0
 * after printing the usage for `--help`.
 */
export function parseOrExit<T extends { help: boolean }>(
  argv: string[],
  parse: (argv: string[]) => T,
  usage: string,
  say: (line: string) => void,
): { args: T } | { exit: number } {
  let args: T;
  try {
    args = parse(argv);
  } catch (error) {
    say(`${error instanceof Error ? error.message : String(error)}\n\n${usage}`);
    return { exit: 2 };
  }
  if (args.help) {
    process.stdout.write(usage);
    return { exit: 0 };
  }
  return { args };
}

/** `--name N`: a whole number ≥ `min`, or `fallback` when not given. */
export function positiveInt(name: string, raw: string | undefined, fallback: number, min = 1): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} takes a whole number ≥ ${min}, not "${raw}"`);
  return n;
}
