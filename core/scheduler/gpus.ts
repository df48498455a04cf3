/** GPU sets of one node as 16-bit masks: bit i set = GPU index i. */

export function maskOf(indices: readonly number[]): number {
  let mask = 0;
  for (const i of indices) mask |= 1 << i;
  return mask;
}

export function indicesOf(mask: number): number[] {
  const out: number[] = [];
  for (let m = mask; m !== 0; m &= m - 1) out.push(31 - Math.clz32(m & -m));
  return out;
}

export function popcount(mask: number): number {
  let x = mask - ((mask >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** The `count` lowest set bits of `mask` (fewer if it has fewer). */
export function lowestBits(mask: number, count: number): number {
  let out = 0;
  let m = mask;
  for (let k = 0; k < count && m !== 0; k++) {
    const bit = m & -m;
    out |= bit;
    m ^= bit;
  }
  return out;
}
