/**
 * A contract's shape: a step function of node count over time (reference §5.2, §9). It is a sorted
 * list of breakpoints; the quantity changes to `q` at `t` and the last breakpoint is always 0. Every
 * operation returns a new normalised shape and refuses to make any quantity negative, so a seller
 * can never give away time it does not hold.
 */
export interface Breakpoint {
  t: number;
  q: number;
}
export type Shape = readonly Breakpoint[];

export class ShapeError extends Error {}

export function blockShape(start: number, end: number, quantity: number): Shape {
  if (!(end > start)) throw new ShapeError(`empty block [${start}, ${end})`);
  if (!Number.isInteger(quantity) || quantity < 0) throw new ShapeError(`bad quantity ${quantity}`);
  return quantity === 0
    ? []
    : [
        { t: start, q: quantity },
        { t: end, q: 0 },
      ];
}

export function quantityAt(shape: Shape, t: number): number {
  let q = 0;
  for (const b of shape) {
    if (b.t > t) break;
    q = b.q;
  }
  return q;
}

/** The least quantity held at any instant of [start, end). */
export function minOver(shape: Shape, start: number, end: number): number {
  let min = quantityAt(shape, start);
  for (const b of shape) {
    if (b.t <= start) continue;
    if (b.t >= end) break;
    min = Math.min(min, b.q);
  }
  return min;
}

/** Adds `delta` nodes (negative to remove) over [start, end). Throws rather than going below zero. */
export function addBlock(shape: Shape, start: number, end: number, delta: number): Shape {
  if (!(end > start)) throw new ShapeError(`empty window [${start}, ${end})`);
  const times = new Set<number>([start, end]);
  for (const b of shape) times.add(b.t);
  const out: Breakpoint[] = [];
  for (const t of [...times].sort((a, b) => a - b)) {
    const q = quantityAt(shape, t) + (t >= start && t < end ? delta : 0);
    if (q < 0) throw new ShapeError(`quantity would be ${q} at ${new Date(t).toISOString()}`);
    out.push({ t, q });
  }
  return normalise(out);
}

/** Drops leading zeros and repeated quantities; an all-zero shape becomes []. */
export function normalise(points: Breakpoint[]): Shape {
  const out: Breakpoint[] = [];
  for (const p of points) {
    const last = out[out.length - 1];
    if (!last && p.q === 0) continue;
    if (last && last.q === p.q) continue;
    if (last && last.t === p.t) {
      last.q = p.q;
      continue;
    }
    out.push({ ...p });
  }
  return out;
}

export const shapeStart = (shape: Shape): number | null => shape[0]?.t ?? null;
export const shapeEnd = (shape: Shape): number | null => shape[shape.length - 1]?.t ?? null;

/** When the coverage that includes `t` runs out (the next breakpoint at 0); null if none at `t`. */
export function coverageEnd(shape: Shape, t: number): number | null {
  if (quantityAt(shape, t) <= 0) return null;
  for (const b of shape) if (b.t > t && b.q === 0) return b.t;
  return null;
}

/** The first instant at or after `t` with a positive quantity, and when that stretch ends. */
export function nextCoverage(shape: Shape, t: number): { start: number; end: number } | null {
  for (let i = 0; i < shape.length; i++) {
    const b = shape[i]!;
    const next = shape[i + 1];
    const stretchStart = Math.max(b.t, t);
    if (b.q > 0 && next && next.t > stretchStart) {
      const end = coverageEnd(shape, stretchStart);
      if (end !== null) return { start: stretchStart, end };
    }
  }
  return null;
}

export function toWire(shape: Shape): { intervals: string[]; quantities: number[] } {
  return { intervals: shape.map((b) => new Date(b.t).toISOString()), quantities: shape.map((b) => b.q) };
}
