import assert from "node:assert/strict";
import { test } from "node:test";
import { createSession, ortProviders } from "../../src/onnx/ort.js";
import { probeProvider, tinyModel } from "../../src/onnx/provider-probe.js";

async function fallbacks(first: { name: "webgpu" } | { name: "cuda"; device_id: number }) {
  const calls: { provider: string; reason: string }[] = [];
  const session = await createSession(tinyModel(), {
    providers: ortProviders([first, { name: "cpu" }]),
    onFallback: (provider, reason) => calls.push({ provider, reason }),
  });
  await session.release();
  return calls;
}

test("a config listing webgpu first runs on the CPU here, with one fallback naming webgpu and the reason", async (t) => {
  if ((await probeProvider("webgpu")).ok)
    return t.skip("WebGPU works on this machine: there is nothing to fall back from");
  const calls = await fallbacks({ name: "webgpu" });
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.provider, "webgpu");
  assert.match(calls[0]!.reason.split("\n")[0]!, /WebGPU adapter/);
});

// With or without `npm run gpu:install`: without it the provider library is missing; with it, on a machine without
// the CUDA libraries and the driver, it cannot be loaded. ORT says "Failed to load shared library" for both.
test("a config listing cuda first runs on the CPU here, with one fallback naming cuda and the reason", async (t) => {
  if ((await probeProvider("cuda")).ok)
    return t.skip("CUDA works on this machine: there is nothing to fall back from");
  const calls = await fallbacks({ name: "cuda", device_id: 0 });
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.provider, "cuda");
  assert.match(calls[0]!.reason, /Failed to load shared library/);
});
