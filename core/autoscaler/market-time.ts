/**
 * The market's clock and price arithmetic: blocks start "now" (the next minute) or on the hour and
 * end on the hour; prices are whole-block totals in cents; rates are cents per GPU-hour.
 */
import { GPUS_PER_NODE } from "../schemas/common";

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;

/** "NOW" in an order means the beginning of the next minute (an instant on a minute stays). */
export function marketNow(now: number): number {
  return Math.ceil(now / MINUTE_MS) * MINUTE_MS;
}

/** The first hour boundary strictly after `t`. */
export function nextHour(t: number): number {
  return Math.floor(t / HOUR_MS) * HOUR_MS + HOUR_MS;
}

/** The end of a block of at least `hours` starting at `start`: on the hour. */
export function blockEnd(start: number, hours: number): number {
  return Math.ceil((start + hours * HOUR_MS) / HOUR_MS) * HOUR_MS;
}

export function hoursBetween(start: number, end: number): number {
  return (end - start) / HOUR_MS;
}

/**
 * A block's limit as the Nodes API takes it (`max_price_per_node_hour`): whole cents per node-hour
 * that keep `nodes` nodes over [start, end) within the limit, rounded down. The division's float
 * error is forgiven first (a limit of exactly $32.00 a node-hour over 66 minutes divides to
 * 3199.9999999999995): rounded down from there it would be a cent under, and an ask at the limit
 * would not fill.
 */
export function perNodeHourLimit(limitPriceCents: number, nodes: number, start: number, end: number): number {
  return Math.max(0, Math.floor(limitPriceCents / nodes / hoursBetween(start, end) + 1e-9));
}

/** Cents per GPU-hour of a block's total price. */
export function ratePerGpuHour(priceCents: number, nodes: number, start: number, end: number): number {
  const gpuHours = nodes * GPUS_PER_NODE * hoursBetween(start, end);
  return gpuHours > 0 ? priceCents / gpuHours : Number.POSITIVE_INFINITY;
}

/** A whole block's price at a rate, rounded up to the cent as the market's clients do. */
export function blockPrice(rateCentsPerGpuHour: number, nodes: number, start: number, end: number): number {
  return Math.ceil(rateCentsPerGpuHour * nodes * GPUS_PER_NODE * hoursBetween(start, end));
}

export function formatRate(centsPerGpuHour: number): string {
  return `$${(centsPerGpuHour / 100).toFixed(2)}/GPU-h`;
}

export function formatInstant(t: number): string {
  return new Date(t).toISOString().slice(0, 16).replace("T", " ");
}
