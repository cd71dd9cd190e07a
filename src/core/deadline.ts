/**
 * Whether `promise` settled (resolved or rejected) before `deadline` (epoch ms). The one way the daemon waits on
 * something outside it (a broker's acknowledgement, a response, a shutdown step) without hanging on it.
 */
export async function settledBy(promise: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  const settled = promise.then(
    () => true as const,
    () => true as const,
  );
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** {@link settledBy} with a deadline `ms` from now. */
export function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return settledBy(promise, Date.now() + ms);
}
