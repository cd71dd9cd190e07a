/** The OPC UA sink: a server the PLC reads results from and triggers parts through (`opcua.enabled`). */
import type { ResultBatch, ResultSink, SinkContext, SinkFactory, SinkHealth } from "../sink.js";

/**
 * The server's module is imported only when it starts: node-opcua takes about a second to load and prints to the
 * console on import, which every CLI command that builds a daemon would otherwise pay for.
 */
class LazyOpcuaSink implements ResultSink {
  readonly name = "opcua";
  readonly durable = false;
  private loaded: ResultSink | undefined;

  constructor(private readonly context: SinkContext) {}

  async start(): Promise<void> {
    const { OpcuaInterface } = await import("./opcua.js");
    const { config, control, logger } = this.context;
    const inner = new OpcuaInterface(config.opcua, control, logger);
    await inner.start();
    this.loaded = inner;
  }

  async stop(): Promise<void> {
    const inner = this.loaded;
    this.loaded = undefined;
    await inner?.stop();
  }

  deliver(batch: ResultBatch): void {
    this.loaded?.deliver(batch);
  }

  health(): SinkHealth {
    return this.loaded?.health() ?? { ok: false, detail: "not started" };
  }
}

export const opcuaSink: SinkFactory = {
  name: "opcua",
  create: (context) => (context.config.opcua.enabled ? new LazyOpcuaSink(context) : undefined),
};
