/** The OPC UA sink: a server the PLC reads results from and triggers parts through (`opcua.enabled`). */
import type { ResultBatch, ResultSink, SinkContext, SinkFactory, SinkHealth } from "../sink.js";

/**
 * The server's module is imported only when it is prepared or started: node-opcua takes about a second to load and prints to the
 * console on import, which every CLI command that builds a daemon would otherwise pay for.
 */
class LazyOpcuaSink implements ResultSink {
  readonly name = "opcua";
  readonly durable = false;
  private inner: Promise<ResultSink> | undefined;
  private loaded: ResultSink | undefined;

  constructor(private readonly context: SinkContext) {}

  /** Loads the module and prepares the server (certificates, address space) while the daemon loads the models. */
  async prepare(): Promise<void> {
    const inner = await this.server();
    await inner.prepare?.();
  }

  async start(): Promise<void> {
    const inner = await this.server();
    await inner.start();
    this.loaded = inner;
  }

  async stop(): Promise<void> {
    const inner = this.inner;
    this.inner = undefined;
    this.loaded = undefined;
    await (await inner?.catch(() => undefined))?.stop();
  }

  private server(): Promise<ResultSink> {
    this.inner ??= import("./opcua.js").then(({ OpcuaInterface }) => {
      const { config, control, logger } = this.context;
      return new OpcuaInterface(config.opcua, control, logger);
    });
    return this.inner;
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
