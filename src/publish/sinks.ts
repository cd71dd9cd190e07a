/**
 * The outputs, one line each. A new output is a folder under `publish/` whose factory is added to {@link SINKS};
 * nothing else changes (test/publish/sinks.test.ts holds every folder to that; test/daemon/sinks.test.ts shows the
 * daemon driving a sink it was never edited for). Sinks start in this order and
 * stop in the reverse one; each is built only when its configuration enables it.
 */
import { collectionSink } from "./collection/sink.js";
import { CommandExecutor } from "./commands.js";
import { httpSink } from "./http/sink.js";
import { mqttSink } from "./mqtt/sink.js";
import { opcuaSink } from "./opcua/sink.js";
import { recordsSink } from "./records/sink.js";
import type { ResultSink, SinkContext, SinkFactory } from "./sink.js";
import { sparkplugSink } from "./sparkplug/sink.js";

export const SINKS: readonly SinkFactory[] = [
  mqttSink, // results, defect events (outbox), snapshots, status, commands
  collectionSink, // normal frames kept for the next retrain
  recordsSink, // the part record: every frame in SQLite, images of defects
  httpSink, // Prometheus metrics, health, the web console
  sparkplugSink, // Sparkplug B edge node for SCADA (history on disk)
  opcuaSink, // OPC UA server for the PLC: triggers and results
];

/** Builds the sinks the configuration enables, sharing one command executor among those that take commands. */
export function createSinks(
  context: Omit<SinkContext, "executor">,
  factories: readonly SinkFactory[] = SINKS,
): ResultSink[] {
  // one executor, so commands from MQTT and the console run one at a time in arrival order
  const executor = new CommandExecutor(context.control, context.logger);
  const sinks: ResultSink[] = [];
  const names = new Set<string>();
  for (const factory of factories) {
    const sink = factory.create({ ...context, executor });
    if (sink === undefined) continue;
    if (names.has(sink.name)) throw new Error(`two sinks are named "${sink.name}"`);
    names.add(sink.name);
    sinks.push(sink);
  }
  return sinks;
}
