import * as ort from "onnxruntime-node";
import type { ExecutionProviderConfig } from "../config/index.js";

export { ort };

/** The configured execution providers as onnxruntime-node takes them. */
export function ortProviders(
  list: ExecutionProviderConfig[],
): ort.InferenceSession.ExecutionProviderConfig[] {
  return list.map((p) => {
    switch (p.name) {
      case "tensorrt":
        return { name: "tensorrt", deviceId: p.device_id };
      case "cuda":
        return { name: "cuda", deviceId: p.device_id };
      case "webgpu":
        return "webgpu";
      default:
        return "cpu";
    }
  });
}

export interface SessionOptions {
  /** Execution providers in order of preference, e.g. ["tensorrt", "cuda", "cpu"]. */
  providers?: ort.InferenceSession.ExecutionProviderConfig[];
  intraOpThreads?: number;
  /**
   * ORT's memory-pattern planner pre-allocates one block per run from the first run's shapes. For the training
   * graph (hundreds of large intermediates, batch sizes that vary at the epoch's end) it costs more than it saves:
   * measured on the MobileNetV2 training step at batch 32 (benchmarks/retrain.ts), peak RSS 4.3 GiB off vs 6.8 GiB
   * on, step time within noise.
   */
  memPattern?: boolean;
  /**
   * ONNX Runtime's CPU memory arena (default on). It keeps every buffer it ever grew to, rounded up, for the
   * session's life: on the MobileNetV2 training step at batch 8, 256×640, 3.1 GB held against a 2.4 GB live peak
   * without it; but without it each step maps and faults its large buffers afresh, ~28 % more CPU per step
   * (benchmarks/results/retrain-memory.md).
   */
  memArena?: boolean;
  /** Told when a preferred provider could not be used and the next one is tried. */
  onFallback?: (provider: string, reason: string) => void;
}

function providerName(p: ort.InferenceSession.ExecutionProviderConfig): string {
  return typeof p === "string" ? p : p.name;
}

/**
 * Creates a session on the first execution provider that works. onnxruntime-node's prebuilt Linux packages carry
 * only the CPU provider (CUDA/TensorRT need the GPU build, e.g. on JetPack), so a config written for a GPU box still
 * runs — more slowly, and saying so — anywhere else.
 */
export async function createSession(
  model: Uint8Array,
  opts: SessionOptions = {},
): Promise<ort.InferenceSession> {
  const providers = opts.providers?.length ? [...opts.providers] : ["cpu"];
  for (;;) {
    try {
      return await ort.InferenceSession.create(model, {
        executionProviders: providers,
        graphOptimizationLevel: (process.env.STPMD_ORT_OPT as "all" | undefined) ?? "all",
        logSeverityLevel: 3,
        enableMemPattern: opts.memPattern ?? true,
        enableCpuMemArena: opts.memArena ?? true,
        ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
      });
    } catch (err) {
      if (providers.length <= 1) throw err;
      const dropped = providers.shift()!;
      opts.onFallback?.(providerName(dropped), err instanceof Error ? err.message : String(err));
    }
  }
}

export function floatInput(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor("float32", data, dims);
}
