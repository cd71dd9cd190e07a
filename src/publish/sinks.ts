/**
 * The line's interfaces, built from the configuration. Each interface module adds itself here; the daemon starts
 * them after it serves and stops them before it drains.
 */
import type { StpmdConfig } from "../config/index.js";
import type { Logger } from "../core/log.js";
import type { InspectionResult } from "../core/result.js";
import { CommandExecutor, MqttCommands } from "./commands.js";
import type { LineControl, LineInterface } from "./control.js";
import { HttpInterface } from "./http/http.js";
import type { MqttSession } from "./mqtt/publisher.js";
import { SparkplugNode } from "./sparkplug/sparkplug.js";
import { Topics } from "./topics.js";

export * from "./control.js";

/** What the daemon lends its interfaces besides the control. */
export interface LineServices {
  /** The daemon's MQTT session (its Publisher): commands are read and answered over it. */
  mqtt: MqttSession;
}

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
  services: LineServices,
): LineInterface[] {
  const interfaces: LineInterface[] = [];
  // one executor, so commands from MQTT and the console run one at a time in arrival order
  const executor = new CommandExecutor(control, logger);
  if (config.mqtt.commands.enabled) {
    interfaces.push(
      new MqttCommands({
        session: services.mqtt,
        topics: new Topics(config.mqtt.prefix),
        control,
        logger,
        executor,
      }),
    );
  }
  if (config.http.enabled) {
    interfaces.push(new HttpInterface({ config: config.http, control, logger, executor }));
  }
  if (config.sparkplug.enabled) {
    interfaces.push(new SparkplugNode({ sparkplug: config.sparkplug, mqtt: config.mqtt }, control, logger));
  }
  if (config.opcua.enabled) {
    const opcua = config.opcua;
    interfaces.push(
      new LazyInterface("opcua", async () => {
        const { OpcuaInterface } = await import("./opcua/opcua.js");
        return new OpcuaInterface(opcua, control, logger);
      }),
    );
  }
  return interfaces;
}
