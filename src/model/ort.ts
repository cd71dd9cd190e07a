import * as ort from "onnxruntime-node";

export { ort };

export interface SessionOptions {
  /** Execution providers in order of preference, e.g. ["tensorrt", "cuda", "cpu"]. */
  providers?: ort.InferenceSession.ExecutionProviderConfig[];
  intraOpThreads?: number;
}

export async function createSession(model: Uint8Array, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(model, {
    executionProviders: opts.providers ?? ["cpu"],
    graphOptimizationLevel: (process.env.STPMD_ORT_OPT as "all" | undefined) ?? "all",
    logSeverityLevel: 3,
    ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
  });
}

export function floatInput(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor("float32", data, dims);
}
