/**
 * A small seeded pseudo-random source (mulberry32), so generated data is the same for the same
 * seed: UIDs included, a second run of `imaging-lake generate` with the same options sends the
 * same instances (an idempotent re-send for the server).
 */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max]. */
  int(min: number, max: number): number;
  pick<T>(list: readonly T[]): T;
  /** Picks a key by weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K;
  /** A UID under the 2.25 root from 128 random bits (PS3.5 B.2). */
  uid(): string;
}

export function createRandom(seed: number): Random {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const word = () => BigInt(Math.floor(next() * 4294967296));
  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (list) => list[Math.floor(next() * list.length)],
    weighted(weights) {
      const entries = Object.entries(weights) as Array<[keyof typeof weights, number]>;
      let r = next() * entries.reduce((sum, [, w]) => sum + w, 0);
      for (const [key, w] of entries) {
        r -= w;
        if (r < 0) return key;
      }
      return entries[entries.length - 1][0];
    },
    uid() {
      // The top bit set keeps every UID at 39 digits and never 0.
      const value = ((word() | 0x80000000n) << 96n) | (word() << 64n) | (word() << 32n) | word();
      return `2.25.${value.toString(10)}`;
    },
  };
}
