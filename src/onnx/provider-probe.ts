import { pathToFileURL } from "node:url";
import { encodeModel, type Graph } from "./onnx-graph.js";
import { ort } from "./ort.js";

/** One Relu on four floats: the smallest graph every execution provider can place, so a failure is the provider's. */
export function tinyModel(): Uint8Array {
  const graph: Graph = {
    nodes: [{ op: "Relu", inputs: ["x"], outputs: ["y"], attrs: {} }],
    initializers: new Map(),
    inputs: [{ name: "x", dims: [1, 4] }],
    outputs: [{ name: "y", dims: [1, 4] }],
    metadata: {},
    opset: 17,
  };
  return encodeModel(graph);
}

export interface ProbeResult {
  ok: boolean;
  /** ORT's message when the session could not be created or run. */
  error?: string;
}

/**
 * Creates and runs a session on one provider alone (no CPU behind it), so success means the provider itself took
 * the graph, not a silent fallback.
 */
export async function probeProvider(
  provider: ort.InferenceSession.ExecutionProviderConfig,
): Promise<ProbeResult> {
  try {
    const session = await ort.InferenceSession.create(tinyModel(), {
      executionProviders: [provider],
      logSeverityLevel: 3,
    });
    try {
      await session.run({ x: new ort.Tensor("float32", new Float32Array([-1, 0, 1, 2]), [1, 4]) });
    } finally {
      await session.release();
    }
    return { ok: true };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

// Run as a script (`node provider-probe.js '{"name":"cuda","deviceId":0}'`) the probe prints one JSON line: the doctor runs each provider in
// its own process, so a provider library that crashes or writes native log lines to stderr cannot take down or
// clutter the doctor's report, and the stderr lines can be read for the reason (e.g. Dawn's Vulkan warning).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await probeProvider(JSON.parse(process.argv[2] ?? '"cpu"'));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
