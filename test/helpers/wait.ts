/**
 * Polls `fn` every `pollMs` (10 ms) until it returns a value (not undefined/false) and returns it; throws naming
 * `what` after `timeoutMs`. The one polling helper of the tests. An async `fn` is awaited each time: its promise is
 * not the value (a promise is truthy, so a check that was not awaited would pass at once, unchecked).
 */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
  pollMs = 10,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
