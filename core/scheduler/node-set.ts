/** A set of node ordinals as a bitset: O(1) add and delete, ordered scans that skip empty words. */
export class NodeSet {
  private readonly words: Uint32Array;
  size = 0;

  constructor(capacity: number) {
    this.words = new Uint32Array(Math.max(1, Math.ceil(capacity / 32)));
  }

  has(i: number): boolean {
    return (this.words[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  add(i: number): void {
    const w = i >>> 5;
    const bit = 1 << (i & 31);
    if ((this.words[w]! & bit) === 0) {
      this.words[w]! |= bit;
      this.size++;
    }
  }

  delete(i: number): void {
    const w = i >>> 5;
    const bit = 1 << (i & 31);
    if ((this.words[w]! & bit) !== 0) {
      this.words[w]! &= ~bit;
      this.size--;
    }
  }

  /** The smallest member ≥ `from`, or -1. */
  next(from: number): number {
    const words = this.words;
    let w = from >>> 5;
    if (w >= words.length) return -1;
    let x = words[w]! & (~0 << (from & 31));
    while (x === 0) {
      w++;
      if (w >= words.length) return -1;
      x = words[w]!;
    }
    return (w << 5) + (31 - Math.clz32(x & -x));
  }
}
