/** Poll `fn` until it returns a value (not undefined), or fail after `ms` naming what was awaited. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 30_000, every = 25): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
