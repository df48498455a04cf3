/** Command-line helpers the load tools share (tools/load/cli.ts, tools/bench/invoke.ts). */

/** A bad command line: the tool prints it with its usage and exits 2. */
export class UsageError extends Error {}

/** `--name N`: a whole number ≥ `min`, or `fallback` when not given. */
export function positiveInt(name: string, raw: string | undefined, fallback: number, min = 1): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} takes a whole number ≥ ${min}, not "${raw}"`);
  return n;
}
