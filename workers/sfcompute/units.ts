/**
 * SF Compute's units, made explicit in the types (reference §3). The market mixes four money units
 * and two time units, and a mix-up is silent (an order priced per GPU-hour instead of per block is
 * off by a factor of 8 × nodes × hours), so each is a branded number:
 *
 * - `BlockCents`: v0 order and quote `price` / `execution_price`, integer cents for the WHOLE block.
 * - `CentsPerNodeHour`: v1 `max_price_per_node_hour`.
 * - `CentsPerGpuHour`: the rate people quote ("$2.05 per GPU hour"); a node is 8 GPUs.
 * - `Cents`: balances.
 * - `EpochSeconds`: v1 times. v0 times are ISO strings.
 *
 * Quantities are nodes of 8 GPUs everywhere.
 */
declare const unit: unique symbol;
type Unit<T, U extends string> = T & { readonly [unit]: U };

export type BlockCents = Unit<number, "cents per block">;
export type CentsPerNodeHour = Unit<number, "cents per node-hour">;
export type CentsPerGpuHour = Unit<number, "cents per GPU-hour">;
export type Cents = Unit<number, "cents">;
export type EpochSeconds = Unit<number, "epoch seconds">;

export const GPUS_PER_NODE = 8;
export const HOUR_MS = 3_600_000;
export const MINUTE_MS = 60_000;

export const blockCents = (n: number) => checkedInteger(n, "block price") as BlockCents;
export const centsPerNodeHour = (n: number) => checkedInteger(n, "node-hour price") as CentsPerNodeHour;
export const centsPerGpuHour = (n: number) => n as CentsPerGpuHour;
export const cents = (n: number) => checkedInteger(n, "amount") as Cents;
export const epochSeconds = (n: number) => checkedInteger(n, "epoch seconds") as EpochSeconds;

function checkedInteger(n: number, what: string): number {
  if (!Number.isInteger(n)) throw new RangeError(`${what} must be an integer, got ${n}`);
  return n;
}

// ---- money ----

export const dollarsToCents = (dollars: number): number => Math.round(dollars * 100);
export const centsToDollars = (c: number): number => c / 100;

export const nodeHourFromGpuHour = (rate: CentsPerGpuHour): number => rate * GPUS_PER_NODE;
export const gpuHourFromNodeHour = (rate: CentsPerNodeHour | number): CentsPerGpuHour =>
  (rate / GPUS_PER_NODE) as CentsPerGpuHour;

/** Block total as the CLI computes it: ceil(rate × nodes × 8 × hours) (reference §3). */
export function blockPriceFromGpuHourRate(rate: CentsPerGpuHour, nodes: number, durationMs: number): BlockCents {
  return Math.ceil((rate * nodes * GPUS_PER_NODE * durationMs) / HOUR_MS - 1e-9) as BlockCents;
}

export function blockPriceFromNodeHourRate(
  rate: CentsPerNodeHour | number,
  nodes: number,
  durationMs: number,
): BlockCents {
  return Math.ceil((rate * nodes * durationMs) / HOUR_MS - 1e-9) as BlockCents;
}

/** The rate a block total works out to: price / (nodes × 8) / hours. */
export function gpuHourRateOfBlock(price: BlockCents | number, nodes: number, durationMs: number): CentsPerGpuHour {
  return (((price / (nodes * GPUS_PER_NODE)) * HOUR_MS) / durationMs) as CentsPerGpuHour;
}

export function nodeHourRateOfBlock(price: BlockCents | number, nodes: number, durationMs: number): number {
  return ((price / nodes) * HOUR_MS) / durationMs;
}

/** The most a node-hour rate can cost over a block, rounded down so a limit never overshoots it. */
export function maxBlockPriceAtNodeHourRate(
  rate: CentsPerNodeHour | number,
  nodes: number,
  durationMs: number,
): BlockCents {
  return Math.floor((rate * nodes * durationMs) / HOUR_MS + 1e-9) as BlockCents;
}

// ---- time ----

export const toEpochSeconds = (d: Date | number): EpochSeconds =>
  Math.floor((typeof d === "number" ? d : d.getTime()) / 1000) as EpochSeconds;
export const fromEpochSeconds = (s: EpochSeconds | number): Date => new Date(s * 1000);

export const ceilToHour = (ms: number): number => Math.ceil(ms / HOUR_MS) * HOUR_MS;

/** "NOW" on the market is the start of the next minute (reference §7.1). */
export const marketNow = (nowMs: number): number => Math.ceil(nowMs / MINUTE_MS) * MINUTE_MS;

/**
 * A block's start and end as the market accepts them, the CLI's way: a start at or before
 * now + 1 minute is "NOW"; a later start is rounded up to the hour; the end is rounded up to the
 * hour, at least one hour after the start.
 */
export function alignBlock(
  start: Date | "NOW",
  durationMs: number,
  nowMs: number,
): { start_at: "NOW" | Date; end_at: Date; startMs: number; endMs: number } {
  const requested = start === "NOW" ? nowMs : start.getTime();
  const isNow = requested <= nowMs + MINUTE_MS;
  const startMs = isNow ? marketNow(nowMs) : ceilToHour(requested);
  const endMs = ceilToHour(startMs + Math.max(durationMs, HOUR_MS));
  return { start_at: isNow ? "NOW" : new Date(startMs), end_at: new Date(endMs), startMs, endMs };
}
