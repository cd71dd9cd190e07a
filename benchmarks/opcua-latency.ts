import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { AttributeIds, ClientSubscription, DataType, TimestampsToReturn } from "node-opcua-client";
import { Plc, startTestServer, type TestServer } from "../test/helpers/opcua.js";
import { fmt, machineInfo, machineState, median, writeResults } from "./common.js";

/**
 * OPC UA handshake latency: from the PLC's Trigger write to the PLC seeing ResultsReady, over loopback with a real
 * node-opcua client. The control is the tests' TestLineControl, which inspects a synthetic frame as soon as a
 * trigger arrives (on the next turn of the event loop): so the figure is the OPC UA server and client alone,
 * without camera exposure or inference, i.e. what the interface adds to a real inspection's latency.
 *
 * Cases: the PLC polls ResultsReady with back-to-back reads (security None, and Basic256Sha256 SignAndEncrypt),
 * and the PLC is notified by a subscription (publishing interval 50 ms, node-opcua's fastest; sampling 0 =
 * on change), the way SCADA clients usually watch variables.
 *
 * Run: node dist/benchmarks/opcua-latency.js [--triggers 200] [--warmup 20] [--machine-vision] [--json]
 * Writes benchmarks/results/opcua-latency.json and .md (opcua-latency-machine-vision.* with the OPC 40100 view on,
 * which raises a ResultReadyEvent per triggered part besides the handshake); with --json it writes nothing and
 * prints the report as one JSON line instead (for opcua-latency-rounds.ts, which alternates the two).
 */

interface CaseResult {
  name: string;
  security: string;
  observe: "poll" | "subscription";
  triggers: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  mean_ms: number;
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

async function ack(plc: Plc): Promise<void> {
  await plc.write("cam1.ResultsAck", DataType.Boolean, true);
  await plc.write("cam1.ResultsAck", DataType.Boolean, false);
  await plc.write("cam1.Trigger", DataType.Boolean, false);
}

async function pollCase(
  server: TestServer,
  secure: boolean,
  count: number,
  warmup: number,
): Promise<number[]> {
  const plc = await Plc.connect(server, { secure });
  const latencies: number[] = [];
  try {
    for (let i = 0; i < warmup + count; i++) {
      await plc.write("cam1.PartId", DataType.String, `B-${i}`);
      const t0 = performance.now();
      const status = await plc.write("cam1.Trigger", DataType.Boolean, true);
      if (!status.isGood()) throw new Error(`trigger ${i}: ${status.toString()}`);
      while ((await plc.read("cam1.ResultsReady")) !== true) {}
      if (i >= warmup) latencies.push(performance.now() - t0);
      await ack(plc);
    }
  } finally {
    await plc.close();
  }
  return latencies;
}

async function subscriptionCase(server: TestServer, count: number, warmup: number): Promise<number[]> {
  const plc = await Plc.connect(server);
  const subscription = ClientSubscription.create(plc.session, {
    requestedPublishingInterval: 50,
    requestedMaxKeepAliveCount: 20,
    requestedLifetimeCount: 600,
    publishingEnabled: true,
  });
  const latencies: number[] = [];
  try {
    const item = await subscription.monitor(
      { nodeId: plc.nodeId("cam1.ResultsReady"), attributeId: AttributeIds.Value },
      { samplingInterval: 0, queueSize: 10, discardOldest: true },
      TimestampsToReturn.Neither,
    );
    let waiting: { value: boolean; resolve: () => void } | undefined;
    item.on("changed", (dataValue) => {
      if (waiting !== undefined && dataValue.value.value === waiting.value) waiting.resolve();
    });
    const seen = (value: boolean) =>
      new Promise<void>((resolve) => {
        waiting = { value, resolve };
      });
    for (let i = 0; i < warmup + count; i++) {
      await plc.write("cam1.PartId", DataType.String, `S-${i}`);
      const ready = seen(true);
      const t0 = performance.now();
      const status = await plc.write("cam1.Trigger", DataType.Boolean, true);
      if (!status.isGood()) throw new Error(`trigger ${i}: ${status.toString()}`);
      await ready;
      if (i >= warmup) latencies.push(performance.now() - t0);
      // A four-phase PLC: raise ResultsAck, see ResultsReady fall, then lower ResultsAck.
      const fallen = seen(false);
      await plc.write("cam1.ResultsAck", DataType.Boolean, true);
      await fallen;
      await plc.write("cam1.ResultsAck", DataType.Boolean, false);
      await plc.write("cam1.Trigger", DataType.Boolean, false);
    }
  } finally {
    await subscription.terminate();
    await plc.close();
  }
  return latencies;
}

function summarise(
  name: string,
  security: string,
  observe: "poll" | "subscription",
  ms: number[],
): CaseResult {
  return {
    name,
    security,
    observe,
    triggers: ms.length,
    p50_ms: median(ms),
    p99_ms: quantile(ms, 0.99),
    max_ms: Math.max(...ms),
    mean_ms: ms.reduce((a, b) => a + b, 0) / ms.length,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      triggers: { type: "string", default: "200" },
      warmup: { type: "string", default: "20" },
      "machine-vision": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
    },
  });
  const count = Number(values.triggers);
  const warmup = Number(values.warmup);
  process.stderr.write("machine state…\n");
  const before = await machineState();
  process.stderr.write("starting the server…\n");
  const server = await startTestServer(
    {
      result_queue: 4,
      trigger_timeout_ms: 5000,
      machine_vision: { enabled: values["machine-vision"] },
      security: {
        policies: ["None", "Basic256Sha256"],
        modes: ["None", "SignAndEncrypt"],
        accept_unknown_certificates: true,
      },
    },
    ["cam1"],
  );
  const { control } = server;
  // The frame is inspected as soon as the trigger is in: a camera with no exposure time and a model taking no time.
  const trigger = control.trigger.bind(control);
  control.trigger = (camera, partId, by) => {
    trigger(camera, partId, by);
    setImmediate(() => control.emit(camera, 0.1));
  };
  const rows: CaseResult[] = [];
  try {
    rows.push(summarise("poll, None", "None", "poll", await pollCase(server, false, count, warmup)));
    rows.push(
      summarise(
        "poll, SignAndEncrypt",
        "Basic256Sha256 SignAndEncrypt",
        "poll",
        await pollCase(server, true, count, warmup),
      ),
    );
    rows.push(
      summarise("subscription, None", "None", "subscription", await subscriptionCase(server, count, warmup)),
    );
  } finally {
    await server.stop();
  }
  const report = {
    benchmark:
      "OPC UA Trigger write → ResultsReady seen by the client, loopback, TestLineControl emitting on trigger",
    machine: machineInfo(),
    load_before: before,
    load_after: await machineState(),
    machine_vision: values["machine-vision"],
    triggers_per_case: count,
    warmup_per_case: warmup,
    rows,
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  const lines = [
    `# OPC UA handshake latency${values["machine-vision"] ? " (Machine Vision view on)" : ""}`,
    "",
    `Time from the client's \`Trigger\` write (PartId written before) to the client seeing \`ResultsReady\` true, over ${count} triggers per case after ${warmup} untimed ones, on loopback with a real node-opcua client. The control is the tests' TestLineControl, which inspects a synthetic frame on the event-loop turn after the trigger: no camera, no inference — this is what the OPC UA interface adds to an inspection.`,
    "",
    "| case | security | PLC observes by | p50 ms | p99 ms | max ms | mean ms |",
    "|---|---|---|---:|---:|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.security} | ${r.observe} | ${fmt(r.p50_ms, 2)} | ${fmt(r.p99_ms, 2)} | ${fmt(r.max_ms, 2)} | ${fmt(r.mean_ms, 2)} |`,
    ),
    "",
    "Poll: back-to-back reads of ResultsReady. Subscription: a monitored item on ResultsReady (sampling 0, i.e. on change) in a subscription with a 50 ms publishing interval, node-opcua's fastest, which dominates that case.",
    "",
    `Load before: \`${before.uptime}\`, after: \`${report.load_after.uptime}\`.`,
    "",
  ];
  await writeResults(
    values["machine-vision"] ? "opcua-latency-machine-vision" : "opcua-latency",
    report,
    lines.join("\n"),
  );
  process.stdout.write(lines.join("\n"));
}

await main();
