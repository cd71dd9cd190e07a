import { Random } from "./random.js";

/** Seeded split: the same files and seed always give the same held-out set. */
export function splitTrainVal<T>(items: T[], valFraction: number, seed: number): { train: T[]; val: T[] } {
  const order = new Random(seed ^ 0x5f3759df).shuffle(items.map((_, i) => i));
  const nVal = Math.max(1, Math.round(items.length * valFraction));
  const valSet = new Set(order.slice(0, nVal));
  return {
    train: items.filter((_, i) => !valSet.has(i)),
    val: items.filter((_, i) => valSet.has(i)),
  };
}
