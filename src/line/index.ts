/**
 * The line's interfaces, built from the configuration. Each interface module adds itself here; the daemon starts
 * them after it serves and stops them before it drains.
 */
import type { StpmdConfig } from "../config/index.js";
import type { Logger } from "../core/log.js";
import type { InspectionResult } from "../core/result.js";
import type { LineControl, LineInterface } from "./control.js";

export * from "./control.js";

/**
 * An interface whose module is imported only when it starts: node-opcua takes about a second to load and prints
 * to the console on import, which every CLI command that builds a daemon would otherwise pay for.
 */
class LazyInterface implements LineInterface {
  private loaded: LineInterface | undefined;

  constructor(
    readonly name: string,
    private readonly load: () => Promise<LineInterface>,
  ) {}

  async start(): Promise<void> {
    const inner = await this.load();
    await inner.start();
    this.loaded = inner;
  }

  async stop(): Promise<void> {
    const inner = this.loaded;
    this.loaded = undefined;
    await inner?.stop();
  }

  onResult(result: InspectionResult): void {
    this.loaded?.onResult?.(result);
  }

  onBatch(size: number, inferenceMs: number): void {
    this.loaded?.onBatch?.(size, inferenceMs);
  }
}

export function createLineInterfaces(
  config: StpmdConfig,
  control: LineControl,
  logger: Logger,
): LineInterface[] {
  const interfaces: LineInterface[] = [];
  if (config.opcua.enabled) {
    const opcua = config.opcua;
    interfaces.push(
      new LazyInterface("opcua", async () => {
        const { OpcuaInterface } = await import("./opcua.js");
        return new OpcuaInterface(opcua, control, logger);
      }),
    );
  }
  return interfaces;
}
